using YamlDotNet.Core;
using YamlDotNet.Core.Events;
using YamlDotNet.Serialization;

namespace LLMProxy.Tests.Infrastructure;

/// <summary>YAML files read as plain data (maps, lists, strings), every document of a multi-document file.</summary>
public static class YamlDocs
{
    public static List<Dictionary<object, object>> LoadAll(string text)
    {
        var deserializer = new DeserializerBuilder().Build();
        var parser = new Parser(new StringReader(text));
        parser.Consume<StreamStart>();
        var docs = new List<Dictionary<object, object>>();
        while (parser.Accept<DocumentStart>(out _))
        {
            if (deserializer.Deserialize<object>(parser) is Dictionary<object, object> doc)
            {
                docs.Add(doc);
            }
        }
        return docs;
    }

    public static Dictionary<object, object> Map(object? node, string what) =>
        node as Dictionary<object, object> ?? throw new Xunit.Sdk.XunitException($"{what}: expected a map, got {node ?? "nothing"}");

    public static List<object> List(object? node, string what) =>
        node as List<object> ?? throw new Xunit.Sdk.XunitException($"{what}: expected a list, got {node ?? "nothing"}");

    /// <summary>A nested value by keys, or null when any step is missing.</summary>
    public static object? At(object? node, params string[] path)
    {
        foreach (var key in path)
        {
            if (node is not Dictionary<object, object> map || !map.TryGetValue(key, out node))
            {
                return null;
            }
        }
        return node;
    }

    public static string? Str(object? node, params string[] path) => At(node, path) as string;
}
