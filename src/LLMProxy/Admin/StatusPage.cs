using System.Security.Cryptography;
using System.Text;
using Microsoft.AspNetCore.Http;

namespace LLMProxy.Admin;

/// <summary>
/// <c>GET /</c> on the admin port (SPEC §16): one self-contained HTML page embedded in the assembly (inline CSS and JS,
/// nothing external) that polls <c>/api/v1/upstreams</c>. Its Content-Security-Policy allows exactly the page's own
/// inline script and style (by hash, computed once from the embedded file) and fetches to this origin — nothing else,
/// so even a string that slipped into the DOM as markup could not run.
/// </summary>
internal static class StatusPage
{
    private static readonly byte[] Html = Load();
    private static readonly string Policy = BuildPolicy(Encoding.UTF8.GetString(Html));

    public static async Task WriteAsync(HttpContext context)
    {
        var response = context.Response;
        response.ContentType = "text/html; charset=utf-8";
        response.Headers.ContentSecurityPolicy = Policy;
        response.Headers.XContentTypeOptions = "nosniff";
        response.Headers.CacheControl = "no-store";
        response.Headers.XFrameOptions = "DENY";
        response.Headers["Referrer-Policy"] = "no-referrer";
        response.ContentLength = Html.Length;
        await response.Body.WriteAsync(Html, context.RequestAborted);
    }

    private static byte[] Load()
    {
        using var stream = typeof(StatusPage).Assembly.GetManifestResourceStream("LLMProxy.Admin.status.html")
            ?? throw new InvalidOperationException("the status page is not embedded in the assembly");
        using var copy = new MemoryStream();
        stream.CopyTo(copy);
        return copy.ToArray();
    }

    /// <summary>The CSP naming the page's single inline script and style by their SHA-256.</summary>
    internal static string BuildPolicy(string html) =>
        "default-src 'none'; " +
        $"script-src '{Hash(Inline(html, "script"))}'; " +
        $"style-src '{Hash(Inline(html, "style"))}'; " +
        "connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

    private static string Inline(string html, string tag)
    {
        var open = html.IndexOf($"<{tag}>", StringComparison.Ordinal);
        var close = html.IndexOf($"</{tag}>", StringComparison.Ordinal);
        if (open < 0 || close < open)
        {
            throw new InvalidOperationException($"the status page has no inline <{tag}>");
        }
        open += tag.Length + 2;
        return html[open..close];
    }

    private static string Hash(string content) => "sha256-" + Convert.ToBase64String(SHA256.HashData(Encoding.UTF8.GetBytes(content)));
}
