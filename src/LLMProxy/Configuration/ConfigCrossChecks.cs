namespace LLMProxy.Configuration;

/// <summary>Rules that relate objects to each other: unique names, references that must resolve,
/// and listeners that must not share a port. Runs after the walk so order in the file does not matter.</summary>
internal static class ConfigCrossChecks
{
    public static void Run(ConfigReferences refs, ConfigReadContext ctx)
    {
        Unique(refs.Forwards, "forward", ctx);
        Unique(refs.Upstreams, "upstream", ctx);
        Unique(refs.Groups, "upstream group", ctx);
        Resolve(refs.DefaultGroups, refs.Groups, "upstream group", "upstreamGroups", ctx);
        Resolve(refs.RouteGroups, refs.Groups, "upstream group", "upstreamGroups", ctx);
        Resolve(refs.Members, refs.Upstreams, "upstream", "upstreams", ctx);
        PortClashes(refs.Listeners, ctx);
    }

    private static void Unique(List<Located> names, string kind, ConfigReadContext ctx)
    {
        var first = new Dictionary<string, Located>(StringComparer.Ordinal);
        foreach (var name in names)
        {
            if (name.Value.Length == 0) continue; // already reported as required/empty
            if (first.TryGetValue(name.Value, out var earlier))
            {
                ctx.Error(name.At, name.Path, $"duplicate {kind} name '{name.Value}' (first defined at {earlier.Path})");
            }
            else
            {
                first[name.Value] = name;
            }
        }
    }

    private static void Resolve(List<Located> references, List<Located> targets, string kind, string listKey, ConfigReadContext ctx)
    {
        var defined = targets.Where(t => t.Value.Length > 0).Select(t => t.Value).Distinct(StringComparer.Ordinal).ToList();
        foreach (var reference in references)
        {
            if (reference.Value.Length == 0 || defined.Contains(reference.Value, StringComparer.Ordinal)) continue;
            var known = defined.Count == 0 ? $"no {listKey} are defined" : "defined: " + string.Join(", ", defined);
            var hint = KeySuggester.Suggest(reference.Value, defined) is { } close ? $"did you mean '{close}'? " : "";
            ctx.Error(reference.At, reference.Path, $"{kind} '{reference.Value}' is not defined ({hint}{known})");
        }
    }

    private static void PortClashes(List<Listener> listeners, ConfigReadContext ctx)
    {
        for (var j = 1; j < listeners.Count; j++)
        {
            var later = listeners[j];
            for (var i = 0; i < j; i++)
            {
                var earlier = listeners[i];
                if (earlier.Port != later.Port || !ListenAddress.Overlaps(earlier.Address, later.Address)) continue;
                var which = later.IsDefault ? $"port {later.Port} (the default)" : $"port {later.Port}";
                ctx.Error(later.At, later.Path,
                    $"{which} on {later.Address} clashes with {earlier.Owner} on {earlier.Address}:{earlier.Port} ({earlier.Path})");
                break;
            }
        }
    }
}
