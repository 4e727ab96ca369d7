namespace LLMProxy.Configuration;

/// <summary>Builds the dotted/indexed paths used in error messages, e.g. <c>upstreams[1].breaker.threshold</c>.</summary>
internal static class ConfigPath
{
    public static string Child(string parent, string key) => parent.Length == 0 ? key : parent + "." + key;

    public static string Index(string parent, int index) => $"{parent}[{index}]";
}
