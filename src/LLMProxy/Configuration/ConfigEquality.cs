using System.Collections;
using System.Collections.Concurrent;
using System.Reflection;

namespace LLMProxy.Configuration;

/// <summary>
/// Whether two pieces of config say the same thing, for a reload deciding what it may keep. A record's own
/// <c>Equals</c> compares its lists and dictionaries by reference, and every reload builds new ones, so it would call
/// everything changed. This walks records property by property, lists element by element and dictionaries key by key.
/// It reflects over the properties instead of listing them so that a key added to a record later is compared without
/// anyone remembering to: a helper that missed one would keep state a changed config should have reset.
/// Runs only on reload, never per request.
/// </summary>
internal static class ConfigEquality
{
    private static readonly ConcurrentDictionary<Type, PropertyInfo[]?> RecordProperties = new();

    public static bool Same<T>(T? a, T? b) => Same((object?)a, b);

    private static bool Same(object? a, object? b)
    {
        if (ReferenceEquals(a, b))
        {
            return true;
        }
        if (a is null || b is null)
        {
            return false;
        }
        if (a is string || b is string || a.GetType().IsValueType)
        {
            return a.Equals(b);
        }
        // Collections by content whatever their concrete type: a default `[]` and a list read from the file are
        // different types holding the same thing.
        if (a is IDictionary da)
        {
            return b is IDictionary db && SameDictionary(da, db);
        }
        if (a is IEnumerable ea)
        {
            return b is IEnumerable eb && b is not IDictionary && SameSequence(ea, eb);
        }
        if (a.GetType() != b.GetType())
        {
            return false;
        }
        return Properties(a.GetType()) is { } properties
            ? properties.All(p => Same(p.GetValue(a), p.GetValue(b)))
            // Not a record, not a collection: only its own Equals knows (reference equality errs towards "changed").
            : a.Equals(b);
    }

    private static bool SameDictionary(IDictionary a, IDictionary b)
    {
        if (a.Count != b.Count)
        {
            return false;
        }
        foreach (DictionaryEntry entry in a)
        {
            if (!b.Contains(entry.Key) || !Same(entry.Value, b[entry.Key]))
            {
                return false;
            }
        }
        return true;
    }

    /// <summary>In order: the order of members, header ops and routes means something.</summary>
    private static bool SameSequence(IEnumerable a, IEnumerable b)
    {
        var ib = b.GetEnumerator();
        try
        {
            foreach (var item in a)
            {
                if (!ib.MoveNext() || !Same(item, ib.Current))
                {
                    return false;
                }
            }
            return !ib.MoveNext();
        }
        finally
        {
            (ib as IDisposable)?.Dispose();
        }
    }

    /// <summary>The public instance properties of a record class; null for any other class.</summary>
    private static PropertyInfo[]? Properties(Type type) => RecordProperties.GetOrAdd(type, static t =>
        // The compiler gives every record class a protected EqualityContract property; nothing else has one.
        t.GetProperty("EqualityContract", BindingFlags.Instance | BindingFlags.NonPublic) is null
            ? null
            : [.. t.GetProperties(BindingFlags.Instance | BindingFlags.Public).Where(p => p.CanRead && p.GetIndexParameters().Length == 0)]);
}
