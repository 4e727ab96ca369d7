using System.Globalization;
using System.Text;

namespace LLMProxy.Observability;

/// <summary>
/// Makes text safe to print on one line of a log or terminal: control characters (C0, DEL, C1) become
/// <c>\r</c>, <c>\n</c>, <c>\t</c> or <c>\xNN</c>, and invisible or line-breaking Unicode (format characters
/// such as bidi overrides and zero-width spaces, line/paragraph separators, lone surrogates) becomes
/// <c>\uNNNN</c>, so a value can neither start a forged line nor hide what it says. Printable text,
/// including non-ASCII letters, is kept. Escaping is idempotent (its output has nothing left to escape),
/// and text that needs none is returned as it is, without allocating.
/// </summary>
internal static class LogText
{
    /// <summary>Printable ASCII, <c>' '</c> to <c>'~'</c>. (A search by <c>SearchValues</c>: the generic
    /// <c>IndexOfAnyExceptInRange</c> boxed its bounds on every call, measured as allocations per request.)</summary>
    internal static readonly System.Buffers.SearchValues<char> PrintableAscii =
        System.Buffers.SearchValues.Create([.. Enumerable.Range(' ', '~' - ' ' + 1).Select(c => (char)c)]);

    /// <summary>The control characters, <c>char.IsControl</c>'s set: C0, DEL and C1.</summary>
    internal static readonly System.Buffers.SearchValues<char> Controls =
        System.Buffers.SearchValues.Create([.. Enumerable.Range(0, 0x20).Concat(Enumerable.Range(0x7F, 0x9F - 0x7F + 1)).Select(c => (char)c)]);

    public static string Escape(string text)
    {
        var start = text.AsSpan().IndexOfAnyExcept(PrintableAscii);
        if (start < 0) return text;

        StringBuilder? s = null;
        for (var i = start; i < text.Length; i++)
        {
            var c = text[i];
            var pair = char.IsHighSurrogate(c) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1]);
            if (!NeedsEscape(text, i, pair))
            {
                if (pair)
                {
                    s?.Append(c).Append(text[i + 1]);
                    i++;
                }
                else
                {
                    s?.Append(c);
                }
                continue;
            }
            s ??= new StringBuilder(text.Length + 16).Append(text, 0, i);
            switch (c)
            {
                case '\r': s.Append("\\r"); break;
                case '\n': s.Append("\\n"); break;
                case '\t': s.Append("\\t"); break;
                case <= '\xff': s.Append("\\x").Append(((int)c).ToString("x2", CultureInfo.InvariantCulture)); break;
                default: s.Append("\\u").Append(((int)c).ToString("x4", CultureInfo.InvariantCulture)); break;
            }
        }
        return s?.ToString() ?? text;
    }

    private static bool NeedsEscape(string text, int i, bool pair)
    {
        var c = text[i];
        if (c is >= ' ' and <= '~') return false;
        if (c < ' ' || c is >= '\x7f' and <= '\x9f') return true;
        if (char.IsSurrogate(c)) return !pair || IsHidden(CharUnicodeInfo.GetUnicodeCategory(text, i));
        return IsHidden(CharUnicodeInfo.GetUnicodeCategory(c));
    }

    private static bool IsHidden(UnicodeCategory category) => category is UnicodeCategory.Format or UnicodeCategory.LineSeparator
        or UnicodeCategory.ParagraphSeparator or UnicodeCategory.Control or UnicodeCategory.OtherNotAssigned;
}
