using System.Diagnostics;

namespace LLMProxy.Tests.Infrastructure;

/// <summary>
/// The one bounded wait of the suite, for conditions with no push signal (gauges, log lines, breaker states):
/// polls every 25 ms and fails with a description once <c>timeout</c> passed. Imported everywhere by GlobalUsings.
/// </summary>
public static class Eventually
{
    public static async Task WaitUntilAsync(Func<Task<bool>> condition, TimeSpan timeout, Func<Task<string>>? describe = null)
    {
        var clock = Stopwatch.StartNew();
        while (!await condition())
        {
            if (clock.Elapsed > timeout)
            {
                Assert.Fail("condition not met in " + timeout + (describe is null ? "" : ":\n" + await describe()));
            }
            await Task.Delay(25);
        }
    }

    public static Task WaitUntilAsync(Func<bool> condition, TimeSpan timeout) =>
        WaitUntilAsync(() => Task.FromResult(condition()), timeout);
}
