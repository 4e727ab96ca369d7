namespace LLMProxy.Configuration;

/// <summary>YAML spellings of the config enums, in the order they are listed in error messages. (Balancing
/// strategies are not an enum but registered policies: see <see cref="LoadBalancing.LoadBalancingPolicies"/>.)</summary>
internal static class ConfigNames
{
    public static readonly IReadOnlyList<KeyValuePair<string, AuthType>> AuthTypes =
    [
        new("none", AuthType.None), new("bearer", AuthType.Bearer), new("basic", AuthType.Basic),
    ];

    public static readonly IReadOnlyList<KeyValuePair<string, HeaderOp>> HeaderOps =
    [
        new("insert", HeaderOp.Insert), new("replace", HeaderOp.Replace), new("remove", HeaderOp.Remove),
    ];

    public static string Of<T>(IReadOnlyList<KeyValuePair<string, T>> table, T value) where T : struct, Enum
    {
        foreach (var (name, v) in table)
        {
            if (EqualityComparer<T>.Default.Equals(v, value)) return name;
        }
        return value.ToString().ToLowerInvariant();
    }
}
