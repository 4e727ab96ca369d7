using System.Text;

namespace LLMProxy.Configuration;

/// <summary>Replaces <c>${NAME}</c> in a string scalar with the environment variable NAME;
/// <c>$${</c> yields a literal <c>${</c>. Hand-written because the rules are tiny and the error
/// must name the variable without ever echoing the surrounding (possibly secret) text.</summary>
internal static class EnvExpander
{
    /// <summary>Returns the expanded text, or null with <paramref name="error"/> set.</summary>
    public static string? Expand(string text, Func<string, string?> env, out string? error)
    {
        error = null;
        if (!text.Contains('$', StringComparison.Ordinal)) return text;

        var result = new StringBuilder(text.Length);
        List<string>? missing = null;
        var i = 0;
        while (i < text.Length)
        {
            if (text[i] != '$')
            {
                result.Append(text[i++]);
                continue;
            }
            if (i + 2 < text.Length && text[i + 1] == '$' && text[i + 2] == '{')
            {
                result.Append("${");
                i += 3;
                continue;
            }
            if (i + 1 >= text.Length || text[i + 1] != '{')
            {
                result.Append(text[i++]);
                continue;
            }

            var close = text.IndexOf('}', i + 2);
            var name = close < 0 ? null : text[(i + 2)..close];
            if (name is null || !IsValidName(name))
            {
                error = "invalid environment variable reference (expected ${NAME} with letters, digits and '_'; write $${ for a literal ${)";
                return null;
            }
            var value = env(name);
            if (value is null) (missing ??= []).Add(name);
            else result.Append(value);
            i = close + 1;
        }

        if (missing is not null)
        {
            var names = missing.Distinct(StringComparer.Ordinal).ToList();
            error = names.Count == 1
                ? $"environment variable {names[0]} is not set"
                : $"environment variables {string.Join(", ", names)} are not set";
            return null;
        }
        return result.ToString();
    }

    private static bool IsValidName(string name) =>
        name.Length > 0
        && (char.IsAsciiLetter(name[0]) || name[0] == '_')
        && name.All(c => char.IsAsciiLetterOrDigit(c) || c == '_');
}
