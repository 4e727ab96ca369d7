using System.Text;
using LLMProxy.Configuration;
using static LLMProxy.Tests.Configuration.ConfigTestYaml;

namespace LLMProxy.Tests.Configuration;

/// <summary>Seeded random mutations of config.default.yaml: the loader must never throw and must always
/// return either a config or at least one error with a message.</summary>
public class ConfigLoaderFuzzTests
{
    private const int Iterations = 300;
    private static readonly string[] Replacements = ["abc", "-1", "0", "\"\"", "[]", "{}", "~", "${X}", "1.5", "99999999999999999999"];
    private const string Noise = " :-[]{}\"'#&*!|>%@`,\t\n0aZ$";

    [Fact]
    public void LoadYaml_RandomMutationsOfDefaultConfig_NeverThrowAndAlwaysExplain()
    {
        var original = File.ReadAllText(DefaultConfigPath);
        var random = new Random(20240611);
        var invalid = 0;

        for (var i = 0; i < Iterations; i++)
        {
            var yaml = original;
            var mutations = random.Next(1, 4);
            for (var m = 0; m < mutations; m++) yaml = Mutate(yaml, random);

            ConfigLoadResult result;
            try
            {
                result = ConfigLoader.LoadYaml(yaml, _ => null);
            }
            catch (Exception ex)
            {
                Assert.Fail($"iteration {i}: {ex.GetType().Name}: {ex.Message}\n--- yaml ---\n{yaml}");
                throw;
            }

            if (result.Success)
            {
                Assert.NotNull(result.Config);
                Assert.Empty(result.Errors);
            }
            else
            {
                invalid++;
                Assert.Null(result.Config);
                Assert.NotEmpty(result.Errors);
                Assert.All(result.Errors, e => Assert.False(string.IsNullOrWhiteSpace(e.Message), $"iteration {i}: empty message at '{e.Path}'"));
            }
        }

        // The mutations must actually exercise the error paths, not only harmless comment edits.
        Assert.InRange(invalid, Iterations / 4, Iterations);
    }

    private static string Mutate(string yaml, Random random)
    {
        var lines = yaml.Split('\n').ToList();
        switch (random.Next(6))
        {
            case 0 when lines.Count > 1:
                lines.RemoveAt(random.Next(lines.Count));
                return string.Join('\n', lines);
            case 1:
                var at = random.Next(lines.Count);
                lines.Insert(at, lines[at]);
                return string.Join('\n', lines);
            case 2 when yaml.Length > 0:
                var chars = new StringBuilder(yaml);
                chars[random.Next(chars.Length)] = Noise[random.Next(Noise.Length)];
                return chars.ToString();
            case 3:
                return SwapValue(lines, random);
            case 4:
                return yaml[..random.Next(yaml.Length + 1)];
            default:
                var index = random.Next(lines.Count);
                lines[index] = new string(' ', random.Next(0, 4)) + lines[index];
                return string.Join('\n', lines);
        }
    }

    /// <summary>Replaces the value of a random "key: value" line (numbers become strings and so on).</summary>
    private static string SwapValue(List<string> lines, Random random)
    {
        var candidates = lines.Select((line, i) => (line, i))
            .Where(x => x.line.Contains(": ", StringComparison.Ordinal) && !x.line.TrimStart().StartsWith('#'))
            .ToList();
        if (candidates.Count == 0) return string.Join('\n', lines);
        var (text, index) = candidates[random.Next(candidates.Count)];
        var colon = text.IndexOf(": ", StringComparison.Ordinal);
        lines[index] = text[..(colon + 2)] + Replacements[random.Next(Replacements.Length)];
        return string.Join('\n', lines);
    }
}
