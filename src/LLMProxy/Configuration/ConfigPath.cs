namespace LLMProxy.Configuration;

/// <summary>Builds the dotted/indexed paths used in error messages, e.g. <c>upstreams[1].breaker.threshold</c>.</summary>
internal static class ConfigPath
{
    private const int MaxPlainKey = 60;

    public static string Child(string parent, string key) => parent.Length == 0 ? key : parent + "." + key;

    public static string Index(string parent, int index) => $"{parent}[{index}]";

    /// <summary>A key as written in the file, for a key that is not one of ours: quoted (escaped, shortened) unless
    /// it is a plain name, so a key with spaces, line breaks or a kilobyte of text still makes a short, readable path.</summary>
    public static string UnknownKey(string key) =>
        key.Length is > 0 and <= MaxPlainKey && key.All(c => char.IsAsciiLetterOrDigit(c) || c is '_' or '-') ? key : YamlMap.Quote(key);
}
