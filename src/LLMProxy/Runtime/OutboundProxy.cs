using System.Net;
using System.Text;

namespace LLMProxy.Runtime;

/// <summary>
/// <c>httpClient.proxy.url</c> compiled. User info (<c>http://user:pass@host:port</c>, percent-decoded) is
/// taken out of the address and becomes credentials, which .NET uses to answer a proxy's 407 Basic challenge
/// (the CONNECT tunnel of an https upstream) and for SOCKS5 username/password. A plain-http upstream's request
/// goes to the proxy itself, and .NET would send it without credentials, get 407 and then be unable to resend
/// a streamed body — so those requests carry <see cref="PreemptiveAuthorization"/> from the start. The address
/// handed to .NET has no user info, so no exception message, log line or error can show the password.
/// A class, not a record: a generated ToString would print the credential.
/// </summary>
internal sealed class OutboundProxy
{
    private OutboundProxy(Uri address, NetworkCredential? credentials, string? preemptiveAuthorization)
    {
        Address = address;
        Credentials = credentials;
        PreemptiveAuthorization = preemptiveAuthorization;
    }

    /// <summary>scheme://host:port only.</summary>
    public Uri Address { get; }
    public NetworkCredential? Credentials { get; }
    /// <summary><c>Basic base64(user:pass)</c> for plain-http upstreams behind an http(s) proxy; null otherwise.</summary>
    public string? PreemptiveAuthorization { get; }

    /// <param name="url">A url that passed validation (absolute, with a host, scheme http/https/socks4/socks5/socks5h).</param>
    public static OutboundProxy Parse(string url)
    {
        var uri = new Uri(url.Trim(), UriKind.Absolute);
        // .NET's socks5 already resolves names at the proxy, which is what socks5h means.
        var scheme = uri.Scheme.Equals("socks5h", StringComparison.OrdinalIgnoreCase) ? "socks5" : uri.Scheme.ToLowerInvariant();
        var address = new Uri($"{scheme}://{uri.GetComponents(UriComponents.HostAndPort, UriFormat.UriEscaped)}", UriKind.Absolute);
        if (uri.UserInfo.Length == 0)
        {
            return new OutboundProxy(address, null, null);
        }

        var colon = uri.UserInfo.IndexOf(':', StringComparison.Ordinal);
        var user = Uri.UnescapeDataString(colon < 0 ? uri.UserInfo : uri.UserInfo[..colon]);
        var password = colon < 0 ? "" : Uri.UnescapeDataString(uri.UserInfo[(colon + 1)..]);
        var preemptive = scheme is "http" or "https"
            ? "Basic " + Convert.ToBase64String(Encoding.UTF8.GetBytes($"{user}:{password}"))
            : null;
        return new OutboundProxy(address, new NetworkCredential(user, password), preemptive);
    }

    public WebProxy ToWebProxy() => new(Address) { Credentials = Credentials };
}
