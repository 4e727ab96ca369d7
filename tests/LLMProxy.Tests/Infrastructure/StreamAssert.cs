namespace LLMProxy.Tests.Infrastructure;

public static class StreamAssert
{
    /// <summary>Reads to the end and asserts the stream breaks (IOException) instead of ending cleanly.</summary>
    public static async Task EndsAbruptlyAsync(Stream stream)
    {
        var buffer = new byte[1024];
        await Assert.ThrowsAnyAsync<IOException>(async () =>
        {
            while (await stream.ReadAsync(buffer) > 0)
            {
            }
        });
    }
}
