using System.Net;
using System.Net.Http.Headers;
using System.Text.Json;
using LLMProxy.Cli;
using LLMProxy.Mock;
using LLMProxy.Tests.Infrastructure;
using LLMProxy.Tests.Reliability;
using Microsoft.Playwright;

namespace LLMProxy.Tests.Admin;

/// <summary>One headless chromium for the class, launched on first use (never when every test is skipped).</summary>
public sealed class BrowserFixture : IAsyncLifetime
{
    private Task<Browser>? _browser;

    public Task<Browser> GetAsync() => _browser ??= Browser.LaunchAsync();

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync()
    {
        if (_browser is { IsCompletedSuccessfully: true } started)
        {
            await (await started).DisposeAsync();
        }
    }
}

/// <summary>
/// The status page (SPEC §16) in a real browser against the demo's config and mock accounts, through the real admin
/// listener: it renders every key, follows the API within one refresh, asks for the admin token and keeps it in memory
/// only, its buttons act, and attacker-influenced strings stay text.
/// </summary>
public class StatusPageBrowserTests(BrowserFixture fixture) : IClassFixture<BrowserFixture>
{
    private const string Token = "status-page-admin-token-31337";

    /// <summary>The demo's five mock accounts (the flaky one never fails here, so what the page shows is exact).</summary>
    private static async Task<List<MockServer>> DemoMocksAsync()
    {
        var mocks = new List<MockServer>
        {
            await MockServer.StartAsync(new MockOptions { Port = 0, Name = "account-a" }),
            await MockServer.StartAsync(new MockOptions { Port = 0, Name = "account-b" }),
            await MockServer.StartAsync(new MockOptions { Port = 0, Name = "account-c-flaky" }),
        };
        mocks.AddRange(await DemoCommand.StartExtraAccountsAsync());
        return mocks;
    }

    private static string DemoYaml(List<MockServer> mocks, string? adminToken = null)
    {
        var yaml = DemoCommand.DemoConfig(3000, 9000, mocks);
        if (adminToken is null)
        {
            return yaml;
        }
        var withToken = yaml.Replace("    port: 9000\n", $"    port: 9000\n    token: \"{adminToken}\"\n", StringComparison.Ordinal);
        Assert.NotEqual(yaml, withToken);
        return withToken;
    }

    private static async Task SendTrafficAsync(TestProxy proxy, int requests)
    {
        for (var i = 0; i < requests; i++)
        {
            using var r = await proxy.Client.SendAsync(ReliabilityKit.Chat());
            Assert.Equal(HttpStatusCode.OK, r.StatusCode);
        }
    }

    private static async Task<Dictionary<string, JsonElement>> ApiMembersAsync(TestProxy proxy, string? token = null)
    {
        using var request = new HttpRequestMessage(HttpMethod.Get, "/api/v1/upstreams");
        if (token is not null)
        {
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token);
        }
        using var response = await proxy.Admin.SendAsync(request);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        using var doc = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        return doc.RootElement.GetProperty("groups")[0].GetProperty("upstreams").EnumerateArray()
            .ToDictionary(u => u.GetProperty("name").GetString()!, u => u.Clone());
    }

    private static ILocator Card(IPage page, string upstream) => page.Locator($"article[data-upstream=\"{upstream}\"]");

    private static async Task<int> AttributeAsync(IPage page, string name) =>
        int.Parse(await page.Locator("body").GetAttributeAsync(name) ?? "0", System.Globalization.CultureInfo.InvariantCulture);

    [BrowserFact]
    public async Task StatusPage_RendersEveryDemoKey_ApiDisableShownWithinOneRefresh_ReadableOnAPhone()
    {
        var browser = await fixture.GetAsync();
        var mocks = await DemoMocksAsync();
        try
        {
            await using var proxy = await TestProxy.StartAsync(DemoYaml(mocks));
            await SendTrafficAsync(proxy, 12); // the revoked account-d is disabled on first use; account-a spends budget
            var api = await ApiMembersAsync(proxy);
            Assert.Equal(5, api.Count);

            var page = await browser.NewPageAsync(1280, 640);
            await page.GotoAsync($"http://127.0.0.1:{proxy.AdminPort}/?every=300");
            await page.Locator("article[data-upstream]").Nth(api.Count - 1).WaitForAsync();
            Assert.Equal(api.Count, await page.Locator("article[data-upstream]").CountAsync());
            foreach (var (name, member) in api)
            {
                var card = Card(page, name);
                Assert.Equal(member.GetProperty("state").GetString(), await card.GetAttributeAsync("data-state"));
                Assert.Equal(name, await card.Locator(".name").TextContentAsync());
            }
            Assert.Equal("disabled", await Card(page, "account-d-revoked").GetAttributeAsync("data-state"));
            Assert.Contains("status_401", await Card(page, "account-d-revoked").TextContentAsync());
            Assert.Contains("/ 20000", await Card(page, "account-a").TextContentAsync());
            await SaveScreenshotAsync(page);

            // Disabled through the API: the next refresh that starts afterwards shows it.
            using (var disable = await proxy.Admin.PostAsync("/api/v1/upstreams/account-b/disable", null))
            {
                Assert.Equal(HttpStatusCode.OK, disable.StatusCode);
            }
            var started = await AttributeAsync(page, "data-started");
            // Polled from here: the page's CSP forbids the eval Playwright's WaitForFunction would need.
            await WaitUntilAsync(async () => await AttributeAsync(page, "data-refreshes") >= started + 1, TimeSpan.FromSeconds(20));
            Assert.Equal("disabled", await Card(page, "account-b").GetAttributeAsync("data-state"));
            Assert.Contains("admin", await Card(page, "account-b").TextContentAsync());

            // A phone: one column, nothing wider than the screen.
            var phone = await browser.NewPageAsync(390, 844);
            await phone.GotoAsync($"http://127.0.0.1:{proxy.AdminPort}/?every=300");
            await Card(phone, "account-e-backup").WaitForAsync();
            // Measured in one evaluation: the page re-renders as budgets refill, so element handles would go stale.
            Assert.True(await phone.EvaluateAsync<bool>("document.documentElement.scrollWidth <= window.innerWidth"));
            var widest = await phone.EvaluateAsync<double>(
                "Math.max(...Array.from(document.querySelectorAll('article[data-upstream]')).map(a => a.getBoundingClientRect().right))");
            Assert.True(widest is > 0 and <= 390, $"a card reaches {widest}px on a 390px screen");
        }
        finally
        {
            foreach (var m in mocks)
            {
                await m.DisposeAsync();
            }
        }
    }

    [BrowserFact]
    public async Task StatusPage_WithAdminToken_AsksForIt_KeepsItInMemoryOnly_DisableAndEnableButtonsAct()
    {
        var browser = await fixture.GetAsync();
        var mocks = await DemoMocksAsync();
        try
        {
            await using var proxy = await TestProxy.StartAsync(DemoYaml(mocks, Token));
            var page = await browser.NewPageAsync();
            await page.GotoAsync($"http://127.0.0.1:{proxy.AdminPort}/?every=300");

            // The API answered 401: the page asks, and shows no data meanwhile.
            await page.Locator("#token-form").WaitForAsync(new LocatorWaitForOptions { State = WaitForSelectorState.Visible });
            Assert.Equal(0, await page.Locator("article[data-upstream]").CountAsync());
            await page.Locator("#token-input").FillAsync("wrong-token");
            await page.Locator("#token-form button").ClickAsync();
            await page.Locator("#token-form").WaitForAsync(new LocatorWaitForOptions { State = WaitForSelectorState.Visible });
            Assert.Contains("refused", await page.Locator("#error").TextContentAsync());
            await page.Locator("#token-input").FillAsync(Token);
            await page.Locator("#token-form button").ClickAsync();
            await Card(page, "account-b").WaitForAsync();

            await Card(page, "account-b").Locator("button[data-action=disable]").ClickAsync();
            await page.Locator("article[data-upstream=\"account-b\"][data-state=\"disabled\"]").WaitForAsync();
            var b = (await ApiMembersAsync(proxy, Token))["account-b"];
            Assert.Equal("admin", b.GetProperty("disabled").GetProperty("reason").GetString());

            await Card(page, "account-b").Locator("button[data-action=enable]").ClickAsync();
            await page.Locator("article[data-upstream=\"account-b\"][data-state=\"closed\"]").WaitForAsync();
            Assert.Equal(JsonValueKind.Null, (await ApiMembersAsync(proxy, Token))["account-b"].GetProperty("disabled").ValueKind);

            // The token is nowhere but the script's memory: no storage, no cookie, not in the URL or the DOM.
            Assert.Equal(0, await page.EvaluateAsync<int>("localStorage.length + sessionStorage.length"));
            Assert.Empty(await page.Context.CookiesAsync());
            Assert.DoesNotContain(Token, page.Url);
            Assert.DoesNotContain(Token, await page.ContentAsync());
            Assert.Equal("", await page.Locator("#token-input").InputValueAsync());
        }
        finally
        {
            foreach (var m in mocks)
            {
                await m.DisposeAsync();
            }
        }
    }

    [BrowserFact]
    public async Task StatusPage_HostileUpstreamName_ShownAsText_NeverRunAsMarkup()
    {
        var browser = await fixture.GetAsync();
        await using var mock = await MockServer.StartAsync(new MockOptions { Port = 0, Name = "x" });
        const string name = "<img src=x onerror=\"window.pwned=1\"><script>window.pwned=2</script>";
        var yaml = TestProxy.Config($"- name: '{name}'\n  url: \"{mock.BaseUrl.ToString().TrimEnd('/')}\"", $"- name: '{name}'");
        await using var proxy = await TestProxy.StartAsync(yaml);

        var page = await browser.NewPageAsync();
        await page.GotoAsync($"http://127.0.0.1:{proxy.AdminPort}/?every=300");
        await page.Locator("article[data-upstream]").WaitForAsync();
        Assert.Equal(name, await page.Locator("article[data-upstream] .name").TextContentAsync());
        Assert.Equal(0, await page.Locator("main img, main script").CountAsync());
        Assert.Null(await page.EvaluateAsync<int?>("window.pwned"));

        // Its button still targets it by name, escaped into the path.
        await page.Locator("article[data-upstream] button[data-action=disable]").ClickAsync();
        await page.Locator("article[data-upstream][data-state=disabled]").WaitForAsync();
    }

    /// <summary>
    /// Behind a reverse proxy that serves the admin port under a path (https://ops.example/llmproxy/ → the admin's /), the
    /// page's requests must stay under that path: absolute ones (<c>/api/v1/upstreams</c>) went to the proxy's root,
    /// where nothing answers for the admin, and the page showed only "HTTP 404". Here the browser's requests under /ops/
    /// reach the admin with the prefix taken off, and everything else is 404, as at such a proxy.
    /// </summary>
    [BrowserFact]
    public async Task StatusPage_UnderAPathPrefix_ItsRequestsStayUnderIt_RendersAndActs()
    {
        var browser = await fixture.GetAsync();
        await using var mock = await MockServer.StartAsync(new MockOptions { Port = 0, Name = "m" });
        var yaml = TestProxy.Config($"- name: m\n  url: \"{mock.BaseUrl.ToString().TrimEnd('/')}\"", "- name: m");
        await using var proxy = await TestProxy.StartAsync(yaml);
        var origin = $"http://127.0.0.1:{proxy.AdminPort}";

        var page = await browser.NewPageAsync();
        await page.RouteAsync(origin + "/**", async route =>
        {
            var url = new Uri(route.Request.Url);
            if (!url.AbsolutePath.StartsWith("/ops/", StringComparison.Ordinal))
            {
                await route.FulfillAsync(new RouteFulfillOptions { Status = 404, Body = "not here" });
                return;
            }
            var response = await route.FetchAsync(new RouteFetchOptions { Url = origin + url.PathAndQuery["/ops".Length..] });
            await route.FulfillAsync(new RouteFulfillOptions { Response = response });
        });
        await page.GotoAsync(origin + "/ops/?every=200");
        await page.Locator("article[data-upstream=m][data-state=closed]").WaitForAsync();

        await Card(page, "m").Locator("button[data-action=disable]").ClickAsync();
        await page.Locator("article[data-upstream=m][data-state=disabled]").WaitForAsync();
        Assert.Equal("admin", (await ApiMembersAsync(proxy))["m"].GetProperty("disabled").GetProperty("reason").GetString());
    }

    /// <summary>
    /// "disabled … · 5m 0s ago" is a time since, like a countdown a time until: it must follow the clock between
    /// refreshes. The page re-renders only when the API's data changes, and an idle disabled key's data never does —
    /// so the age it showed at the first render stayed there ("now ago") however long the key had been out.
    /// </summary>
    [BrowserFact]
    public async Task StatusPage_DisabledSince_AgeFollowsTheClock_EvenWhenTheDataDoesNotChange()
    {
        var browser = await fixture.GetAsync();
        await using var mock = await MockServer.StartAsync(new MockOptions { Port = 0, Name = "idle" });
        var time = new Microsoft.Extensions.Time.Testing.FakeTimeProvider(DateTimeOffset.UtcNow);
        var yaml = TestProxy.Config($"- name: idle\n  url: \"{mock.BaseUrl.ToString().TrimEnd('/')}\"", "- name: idle");
        await using var proxy = await TestProxy.StartAsync(yaml, time);
        using (var disable = await proxy.Admin.PostAsync("/api/v1/upstreams/idle/disable", null))
        {
            Assert.Equal(HttpStatusCode.OK, disable.StatusCode);
        }

        var page = await browser.NewPageAsync();
        await page.GotoAsync($"http://127.0.0.1:{proxy.AdminPort}/?every=200");
        await page.Locator("article[data-upstream=idle][data-state=disabled]").WaitForAsync();

        // Seven minutes on the server's clock: the next refreshes carry the new "now" and nothing else new.
        time.Advance(TimeSpan.FromMinutes(7));
        var started = await AttributeAsync(page, "data-started");
        await WaitUntilAsync(async () => await AttributeAsync(page, "data-refreshes") >= started + 2, TimeSpan.FromSeconds(20));
        Assert.Matches(@"^admin · 7m \d+s ago$", await Card(page, "idle").Locator("dd .note").TextContentAsync());
    }

    /// <summary>
    /// Every run saves its screenshot beside the test binary; with <c>LLMPROXY_UPDATE_SCREENSHOT=1</c> it also replaces
    /// the README's docs/status-page.png (so an ordinary test run leaves the checkout clean).
    /// </summary>
    private static async Task SaveScreenshotAsync(IPage page)
    {
        var targets = new List<string> { Path.Combine(AppContext.BaseDirectory, "status-page.png") };
        if (Environment.GetEnvironmentVariable("LLMPROXY_UPDATE_SCREENSHOT") == "1" && Browser.RepositoryRoot() is { } root)
        {
            targets.Add(Path.Combine(root, "docs", "status-page.png"));
        }
        try
        {
            var bytes = await page.ScreenshotAsync(new PageScreenshotOptions { FullPage = true });
            foreach (var target in targets)
            {
                await File.WriteAllBytesAsync(target, bytes);
            }
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            // Not writable here: the screenshot is a by-product, not what the test checks.
        }
    }
}
