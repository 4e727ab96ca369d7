namespace LLMProxy.Routing;

/// <summary>
/// A compiled model-name glob: <c>*</c> matches any run of characters (none included), <c>?</c> exactly one
/// character (one UTF-16 code unit), everything else itself, compared ordinal-ignore-case — the same
/// comparison as the upstream <c>modelMap</c> keys, so "GPT-4o" routes, filters and maps like "gpt-4o".
/// Hand-written because the only library alternative is a regex per pattern, which costs a compile per
/// config and an engine run per request; this is a handful of span comparisons and never allocates.
/// </summary>
/// <remarks>
/// The pattern is cut at its stars into fixed-length parts. The first part is anchored at the start, the
/// last at the end, and each middle part is taken at its leftmost place after the previous one: because
/// every part has a fixed length, leftmost placement never loses a match a later placement would find.
/// </remarks>
internal sealed class ModelGlob
{
    /// <summary>Longest pattern (and longest exact model name) a config may hold; model names are far shorter.</summary>
    public const int MaxLength = 256;

    private readonly Part _head;
    private readonly Part[] _middle;
    private readonly Part _tail;
    private readonly bool _hasStar;
    private readonly int _minLength;

    private ModelGlob(string pattern)
    {
        Pattern = pattern;
        var pieces = pattern.Split('*');
        _hasStar = pieces.Length > 1;
        _head = new Part(pieces[0]);
        _tail = _hasStar ? new Part(pieces[^1]) : Part.Empty;
        // Empty middle parts come from "**" and match anywhere, so they are dropped.
        _middle = [.. pieces.Skip(1).SkipLast(1).Where(p => p.Length > 0).Select(p => new Part(p))];
        _minLength = _head.Length + _tail.Length + _middle.Sum(p => p.Length);
        IsLiteral = !_hasStar && !pattern.Contains('?', StringComparison.Ordinal);
    }

    /// <summary>The pattern as written in the config.</summary>
    public string Pattern { get; }

    /// <summary>True when the pattern has no wildcard, i.e. it names exactly one model.</summary>
    public bool IsLiteral { get; }

    /// <summary>Compiles a pattern that <see cref="Validate"/> accepts.</summary>
    /// <exception cref="ArgumentException">The pattern is invalid; config validation rules that out before compiling.</exception>
    public static ModelGlob Parse(string pattern)
    {
        if (Validate(pattern) is { } error) throw new ArgumentException($"invalid model glob: {error}", nameof(pattern));
        return new ModelGlob(pattern);
    }

    /// <summary>Why <paramref name="pattern"/> is not a valid model glob, or null when it is. The message is
    /// phrased to follow a config path ("must not be empty").</summary>
    public static string? Validate(string? pattern)
    {
        if (NameProblem(pattern) is { } problem) return problem;
        foreach (var c in pattern!)
        {
            // Other glob dialects give these meaning; a pattern relying on that would silently never match here.
            if (c is '[' or ']' or '{' or '}' or '\\')
            {
                return $"only * and ? are wildcards; '{c}' is not allowed (character classes, alternatives and escapes are not supported)";
            }
        }
        return null;
    }

    /// <summary>Why <paramref name="name"/> is not a valid exact model name (a <c>modelMap</c> key or value),
    /// or null when it is: non-empty, at most <see cref="MaxLength"/> characters, no control characters,
    /// no surrounding whitespace, well-formed Unicode (it is JSON-encoded into request bodies).</summary>
    public static string? NameProblem(string? name)
    {
        if (string.IsNullOrEmpty(name)) return "must not be empty";
        if (name.Length > MaxLength) return $"must be at most {MaxLength} characters (got {name.Length})";
        if (char.IsWhiteSpace(name[0]) || char.IsWhiteSpace(name[^1])) return "must not start or end with whitespace";
        for (var i = 0; i < name.Length; i++)
        {
            var c = name[i];
            if (char.IsControl(c)) return "must not contain control characters";
            if (char.IsHighSurrogate(c) && i + 1 < name.Length && char.IsLowSurrogate(name[i + 1]))
            {
                i++;
                continue;
            }
            if (char.IsSurrogate(c)) return "must be valid Unicode text (it contains a lone surrogate)";
        }
        return null;
    }

    /// <summary>Whether <paramref name="model"/> matches the whole pattern, ignoring case. Never allocates.</summary>
    public bool IsMatch(ReadOnlySpan<char> model)
    {
        if (!_hasStar) return model.Length == _head.Length && _head.MatchesAt(model, 0);
        if (model.Length < _minLength) return false;
        if (!_head.MatchesAt(model, 0) || !_tail.MatchesAt(model, model.Length - _tail.Length)) return false;

        // Middle parts must fit between the anchored head and tail, in order, without overlapping them.
        var window = model[..^_tail.Length];
        var from = _head.Length;
        foreach (var part in _middle)
        {
            var at = part.IndexIn(window, from);
            if (at < 0) return false;
            from = at + part.Length;
        }
        return true;
    }

    public override string ToString() => Pattern;

    /// <summary>A star-free stretch of the pattern: fixed length, literal runs at known offsets, '?' between them.</summary>
    private sealed class Part
    {
        public static readonly Part Empty = new("");

        private readonly string[] _literals;
        private readonly int[] _offsets;

        public Part(string text)
        {
            Length = text.Length;
            var literals = new List<string>();
            var offsets = new List<int>();
            var start = 0;
            for (var i = 0; i <= text.Length; i++)
            {
                if (i < text.Length && text[i] != '?') continue;
                if (i > start)
                {
                    literals.Add(text[start..i]);
                    offsets.Add(start);
                }
                start = i + 1;
            }
            _literals = [.. literals];
            _offsets = [.. offsets];
        }

        public int Length { get; }

        public bool MatchesAt(ReadOnlySpan<char> text, int at)
        {
            if (at < 0 || at + Length > text.Length) return false;
            for (var i = 0; i < _literals.Length; i++)
            {
                if (!text.Slice(at + _offsets[i], _literals[i].Length).Equals(_literals[i], StringComparison.OrdinalIgnoreCase)) return false;
            }
            return true;
        }

        /// <summary>Leftmost position ≥ <paramref name="from"/> where this part matches entirely inside <paramref name="text"/>, or -1.</summary>
        public int IndexIn(ReadOnlySpan<char> text, int from)
        {
            var last = text.Length - Length;
            if (_literals.Length == 0) return from <= last ? from : -1;

            // Let the vectorised search find candidates for the first literal run, then check the rest there.
            var first = _literals[0];
            var firstOffset = _offsets[0];
            while (from <= last)
            {
                var searchEnd = last + firstOffset + first.Length;
                var found = text[(from + firstOffset)..searchEnd].IndexOf(first, StringComparison.OrdinalIgnoreCase);
                if (found < 0) return -1;
                var at = from + found;
                if (MatchesAt(text, at)) return at;
                from = at + 1;
            }
            return -1;
        }
    }
}
