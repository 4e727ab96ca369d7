using YamlDotNet.Core;
using YamlDotNet.Core.Events;

namespace LLMProxy.Configuration;

/// <summary>How much YAML the loader accepts. Far above any real configuration (the shipped default has a
/// few hundred nodes), low enough that loading a hostile file costs milliseconds and a few megabytes.</summary>
public static class ConfigLimits
{
    /// <summary>Largest config accepted: 1 MiB (bytes of a file, characters of a string).</summary>
    public const int MaxSize = 1024 * 1024;

    /// <summary>Deepest nesting of mappings and lists, counting what aliases stand for.</summary>
    public const int MaxDepth = 64;

    /// <summary>Most entries in one mapping or list.</summary>
    public const int MaxEntries = 10_000;

    /// <summary>Most nodes (keys, values, list items) in the document, each alias counting as the nodes it repeats.</summary>
    public const int MaxNodes = 100_000;

    /// <summary>Most characters of scalar text, each alias counting as the text it repeats: aliases may not make
    /// the document hold more text than a file at <see cref="MaxSize"/> could.</summary>
    public const int MaxTextLength = MaxSize;

    /// <summary>Most aliases (<c>*name</c>) in the document.</summary>
    public const int MaxAliases = 1_000;
}

/// <summary>A limit of <see cref="ConfigLimits"/> was hit while parsing; the document is refused unread.</summary>
internal sealed class ConfigLimitException(Mark start, Mark end, string message) : YamlException(start, end, message);

/// <summary>
/// Sits between YamlDotNet's (iterative) parser and its (recursive) node loader and bounds the work that any
/// later walk of the tree can do. YamlDotNet resolves an alias to the very node its anchor names, so with
/// aliases the tree is a graph that recursive walks (YamlDotNet's own key hashing and equality, our reader)
/// visit once per path: nine aliases of nine aliases of ... ("billion laughs") turn a sub-kilobyte file into
/// a billion visits, and an alias inside its own anchor is a cycle that overflows the stack — a crash no
/// catch can stop. So every anchor remembers the size it stands for, every alias is charged that size, and
/// the document is refused (as a <see cref="ConfigLimitException"/>) the moment a limit is passed, before
/// YamlDotNet builds anything from it. Also remembers the last position for errors YamlDotNet raises without one.
/// </summary>
internal sealed class GuardedParser(IParser inner) : IParser
{
    private readonly Stack<Frame> _open = new();
    private readonly Dictionary<string, Extent> _anchors = new(StringComparer.Ordinal);
    private long _nodes;
    private long _text;
    private int _aliases;

    public Mark LastPosition { get; private set; } = Mark.Empty;

    public ParsingEvent? Current => inner.Current;

    public bool MoveNext()
    {
        var moved = inner.MoveNext();
        if (inner.Current is not { } current) return moved;

        LastPosition = current.End;
        switch (current)
        {
            case DocumentStart:
                _anchors.Clear();
                break;
            case Scalar scalar:
                Charge(current, 1, scalar.Value.Length);
                Completed(current, scalar.Anchor, new Extent(1, scalar.Value.Length, 0));
                break;
            case AnchorAlias alias:
                Alias(alias);
                break;
            case MappingStart or SequenceStart:
                if (_open.Count + 1 > ConfigLimits.MaxDepth)
                {
                    throw Refuse(current, $"nesting is deeper than {ConfigLimits.MaxDepth} levels");
                }
                Charge(current, 1, 0);
                _open.Push(new Frame(((NodeEvent)current).Anchor, current is MappingStart, _nodes - 1, _text));
                break;
            case MappingEnd or SequenceEnd when _open.Count > 0:
                var frame = _open.Pop();
                Completed(current, frame.Anchor, new Extent(_nodes - frame.NodesBefore, _text - frame.TextBefore, frame.ChildHeight + 1));
                break;
        }
        return moved;
    }

    private void Alias(AnchorAlias alias)
    {
        var name = alias.Value.Value;
        foreach (var open in _open)
        {
            if (!open.Anchor.IsEmpty && open.Anchor.Value == name)
            {
                throw Refuse(alias, $"alias *{Shown(name)} refers to a node that contains it (a cycle)");
            }
        }
        if (++_aliases > ConfigLimits.MaxAliases)
        {
            throw Refuse(alias, $"more than {ConfigLimits.MaxAliases} aliases");
        }
        // An unknown anchor is YamlDotNet's to report; charge it as one node.
        var extent = _anchors.GetValueOrDefault(name, new Extent(1, 0, 0));
        if (_open.Count + extent.Height > ConfigLimits.MaxDepth)
        {
            throw Refuse(alias, $"nesting is deeper than {ConfigLimits.MaxDepth} levels (counting what aliases repeat)");
        }
        Charge(alias, extent.Nodes, extent.Text);
        Completed(alias, AnchorName.Empty, extent);
    }

    /// <summary>Adds a node's (expanded) size to the document's totals.</summary>
    private void Charge(ParsingEvent at, long nodes, long text)
    {
        _nodes += nodes;
        _text += text;
        if (_nodes > ConfigLimits.MaxNodes)
        {
            throw Refuse(at, $"the document has more than {ConfigLimits.MaxNodes} nodes (keys, values and list items, each alias counting as what it repeats)");
        }
        if (_text > ConfigLimits.MaxTextLength)
        {
            throw Refuse(at, $"the document holds more than {ConfigLimits.MaxTextLength} characters of text (each alias counting as what it repeats)");
        }
    }

    /// <summary>A node ended: remember its size under its anchor and count it as an entry of its parent.</summary>
    private void Completed(ParsingEvent at, AnchorName anchor, Extent extent)
    {
        if (!anchor.IsEmpty)
        {
            _anchors[anchor.Value] = extent;
        }
        if (_open.Count == 0) return;

        var parent = _open.Pop();
        parent = parent with { Children = parent.Children + 1, ChildHeight = Math.Max(parent.ChildHeight, extent.Height) };
        _open.Push(parent);
        // A mapping's children alternate key, value: one entry per key.
        var entries = parent.IsMapping ? (parent.Children + 1) / 2 : parent.Children;
        if (entries > ConfigLimits.MaxEntries)
        {
            throw Refuse(at, $"a {(parent.IsMapping ? "mapping" : "list")} has more than {ConfigLimits.MaxEntries} entries");
        }
    }

    private static ConfigLimitException Refuse(ParsingEvent at, string message) => new(at.Start, at.End, message);

    private static string Shown(string anchor) => anchor.Length > 40 ? anchor[..37] + "..." : anchor;

    /// <summary>What a node stands for once its aliases are expanded: nodes, characters of text, nesting height.</summary>
    private readonly record struct Extent(long Nodes, long Text, int Height);

    /// <summary>An open mapping or list; the totals before it started give its own size when it ends.</summary>
    private readonly record struct Frame(AnchorName Anchor, bool IsMapping, long NodesBefore, long TextBefore)
    {
        public int Children { get; init; }
        public int ChildHeight { get; init; }
    }
}
