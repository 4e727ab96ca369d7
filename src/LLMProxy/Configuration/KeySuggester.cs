namespace LLMProxy.Configuration;

/// <summary>Builds the "unknown key" message with a "did you mean" hint for near misses
/// such as <c>rateLimit</c> → <c>ratelimit</c> or <c>max_requests</c> → <c>maxRequests</c>.
/// Hand-written: a 20-line edit distance is not worth a dependency.</summary>
internal static class KeySuggester
{
    public static string UnknownKeyMessage(string key, IReadOnlyList<string> known)
    {
        var suggestion = Suggest(key, known);
        return suggestion is not null
            ? $"unknown key (did you mean '{suggestion}'?)"
            : $"unknown key (expected one of: {string.Join(", ", known)})";
    }

    public static string? Suggest(string key, IReadOnlyList<string> known)
    {
        var normalized = Normalize(key);
        foreach (var candidate in known)
        {
            if (Normalize(candidate) == normalized) return candidate;
        }

        string? best = null;
        var bestDistance = int.MaxValue;
        // Allow roughly one edit per three characters, at most three, so short keys need near-exact spelling.
        var allowed = Math.Clamp(normalized.Length / 3, 1, 3);
        foreach (var candidate in known)
        {
            var target = Normalize(candidate);
            // Lengths further apart than the allowed edits cannot match; skipping them also keeps a huge key cheap.
            if (Math.Abs(normalized.Length - target.Length) > allowed) continue;
            var distance = Distance(normalized, target);
            if (distance <= allowed && distance < bestDistance)
            {
                best = candidate;
                bestDistance = distance;
            }
        }
        return best;
    }

    private static string Normalize(string key) =>
        new(key.Where(c => c is not ('_' or '-' or ' ')).Select(char.ToLowerInvariant).ToArray());

    private static int Distance(string a, string b)
    {
        var previous = new int[b.Length + 1];
        var current = new int[b.Length + 1];
        for (var j = 0; j <= b.Length; j++) previous[j] = j;
        for (var i = 1; i <= a.Length; i++)
        {
            current[0] = i;
            for (var j = 1; j <= b.Length; j++)
            {
                var cost = a[i - 1] == b[j - 1] ? 0 : 1;
                current[j] = Math.Min(Math.Min(current[j - 1] + 1, previous[j] + 1), previous[j - 1] + cost);
            }
            (previous, current) = (current, previous);
        }
        return previous[b.Length];
    }
}
