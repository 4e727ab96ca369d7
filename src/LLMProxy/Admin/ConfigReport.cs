using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using LLMProxy.Configuration;

namespace LLMProxy.Admin;

/// <summary>
/// <c>GET /api/v1/config</c> (SPEC §16): the configuration in force, as the loader understood it (defaults filled in),
/// redacted by rule rather than by a list of today's fields, so a key added later is covered too: every value under a
/// name that holds a secret (<c>token</c>, <c>password</c>, <c>username</c>, <c>secret</c>, <c>sha256</c>, a client
/// <c>key</c>, any <c>…Key</c>/<c>…Token</c>/<c>…Password</c>), every header op's <c>value</c>, and in every url the
/// user info and each query value. A url that does not parse is hidden whole (it may be a connection string).
/// </summary>
internal static class ConfigReport
{
    public const string Redacted = "[redacted]";

    private static readonly JsonSerializerOptions Options = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        Converters = { new JsonStringEnumConverter(JsonNamingPolicy.CamelCase) },
    };

    public static void Write(Utf8JsonWriter json, ProxyConfig config)
    {
        var node = JsonSerializer.SerializeToNode(config, Options)!.AsObject();
        Redact(node);
        foreach (var (name, value) in node)
        {
            json.WritePropertyName(name);
            if (value is null)
            {
                json.WriteNullValue();
            }
            else
            {
                value.WriteTo(json);
            }
        }
    }

    internal static void Redact(JsonNode? node)
    {
        switch (node)
        {
            case JsonObject obj:
                // A header op's key is a header name, its value may be a credential; anywhere else a "key" is a secret.
                var headerOp = obj.ContainsKey("op");
                foreach (var name in obj.Select(p => p.Key).ToArray())
                {
                    var value = obj[name];
                    if (value is JsonValue && value.GetValueKind() == JsonValueKind.String)
                    {
                        if (IsSecret(name, headerOp))
                        {
                            obj[name] = Redacted;
                        }
                        else if (IsUrl(name))
                        {
                            obj[name] = SafeUrl(value.GetValue<string>());
                        }
                    }
                    else if (value is JsonArray or JsonObject && IsSecret(name, headerOp))
                    {
                        obj[name] = Redacted;
                    }
                    else
                    {
                        Redact(value);
                    }
                }
                break;
            case JsonArray array:
                foreach (var item in array)
                {
                    Redact(item);
                }
                break;
        }
    }

    private static bool IsSecret(string name, bool headerOp)
    {
        if (headerOp)
        {
            return name == "value";
        }
        return name is "key" or "token" or "password" or "username" or "secret" or "sha256" or "apiKey" or "credentials"
            || name.EndsWith("Key", StringComparison.Ordinal) && name != "affinityKey"
            || name.EndsWith("Token", StringComparison.Ordinal)
            || name.EndsWith("Password", StringComparison.Ordinal)
            || name.EndsWith("Secret", StringComparison.Ordinal);
    }

    private static bool IsUrl(string name) =>
        name.Equals("url", StringComparison.OrdinalIgnoreCase) || name.EndsWith("Url", StringComparison.Ordinal);

    /// <summary>
    /// scheme://host:port/path with every query value replaced and every path segment that looks like a key hidden
    /// (<see cref="LooksLikeKey"/>); no user info, no fragment.
    /// </summary>
    internal static string SafeUrl(string url)
    {
        if (!Uri.TryCreate(url, UriKind.Absolute, out var uri) || string.IsNullOrEmpty(uri.Host))
        {
            return Redacted;
        }
        var path = uri.AbsolutePath;
        var segments = path.Split('/');
        var keyInPath = false;
        for (var i = 0; i < segments.Length; i++)
        {
            if (LooksLikeKey(Uri.UnescapeDataString(segments[i])))
            {
                segments[i] = Redacted;
                keyInPath = true;
            }
        }
        if (uri.UserInfo.Length == 0 && uri.Query.Length == 0 && !keyInPath && !url.Contains('#', StringComparison.Ordinal))
        {
            return url; // nothing to hide: as written
        }
        var safe = $"{uri.Scheme}://{uri.Authority}{(keyInPath ? string.Join('/', segments) : path)}"; // Authority never includes the user info
        if (uri.Query.Length > 1)
        {
            // A part without '=' may be a bare key: hidden whole.
            var names = uri.Query[1..].Split('&').Select(pair => pair.Contains('=') ? pair.Split('=', 2)[0] + "=" + Redacted : Redacted);
            safe += "?" + string.Join('&', names);
        }
        return safe;
    }

    // Prefixes providers give their keys (OpenAI/Anthropic/Stripe-style sk-/rk-, Google AIza, GitHub, Slack).
    private static readonly string[] KeyPrefixes = ["sk-", "sk_", "rk-", "rk_", "pk_", "AIza", "ghp_", "gho_", "github_pat_", "xox"];

    /// <summary>
    /// Whether a url path segment may be a credential: a known key prefix (12+ characters), or a long run of letters and
    /// digits with little repetition (24+ characters, mixed, at least 12 distinct) such as a hex or base64 key or a
    /// UUID. Errs on the side of hiding: a hidden deployment id costs a reader little, a shown key costs its owner.
    /// </summary>
    internal static bool LooksLikeKey(string segment)
    {
        if (segment.Length >= 12 && KeyPrefixes.Any(p => segment.StartsWith(p, StringComparison.Ordinal)))
        {
            return true;
        }
        if (segment.Length < 24 || segment.Contains('.', StringComparison.Ordinal))
        {
            return false;
        }
        var letters = 0;
        var digits = 0;
        foreach (var c in segment)
        {
            if (char.IsAsciiLetter(c))
            {
                letters++;
            }
            else if (char.IsAsciiDigit(c))
            {
                digits++;
            }
            else if (c is not ('-' or '_' or '+' or '=' or '~'))
            {
                return false;
            }
        }
        return letters > 0 && digits > 0 && segment.Distinct().Count() >= 12;
    }
}
