using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;

namespace LLMProxy.Forwarding;

/// <summary>
/// The first look at an upstream's answer, before any of it is copied to the client (the mirror of
/// <see cref="RequestScreen"/>): an answer the proxy cannot pass on as HTTP is the upstream's protocol error — counted
/// against it, retried elsewhere while nothing was sent — never a broken status line written to the client, a success
/// in the access log that Kestrel then turns into a 500, or a failed write charged to the client.
/// </summary>
internal static class ResponseScreen
{
    /// <returns>False when the answer must not reach the client.</returns>
    public static bool IsPassable(HttpResponseMessage response)
    {
        var status = (int)response.StatusCode;
        // .NET's client takes any three digits ("099", "999"); HTTP has 100-599 (RFC 9110 §15), and Kestrel would
        // write whatever number it is given. 101 was never asked for (the proxy strips Upgrade): passing it on would
        // turn the connection into a raw tunnel that carries unaccounted bytes with an injected key.
        if (status is < 100 or > 599 or StatusCodes.Status101SwitchingProtocols)
        {
            return false;
        }
        // 204 and 205 have no content (RFC 9110 §15.3.5-6). Kestrel refuses a non-zero Content-Length on them and any
        // body write on a 205; .NET's client already drops a 204's body, not a 205's.
        if (status is StatusCodes.Status204NoContent or StatusCodes.Status205ResetContent
            && (response.Content.Headers.ContentLength > 0
                || status == StatusCodes.Status205ResetContent && response.Headers.TransferEncodingChunked == true))
        {
            return false;
        }
        return true;
    }

    /// <summary>
    /// Drops a reason phrase that is not printable ASCII (YARP copies the upstream's when it is not the standard one):
    /// Kestrel writes it byte for byte, control characters and escape sequences included, and clients ignore it anyway
    /// (RFC 9112 §4). The client then gets the standard phrase for the status.
    /// </summary>
    public static void SanitizeReasonPhrase(HttpContext context)
    {
        if (context.Features.Get<IHttpResponseFeature>() is { ReasonPhrase: { } reason } feature
            && !RequestScreen.IsFieldValue(reason))
        {
            feature.ReasonPhrase = null;
        }
    }
}
