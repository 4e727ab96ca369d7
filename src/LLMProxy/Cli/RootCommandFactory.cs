using System.CommandLine;
using System.Globalization;
using LLMProxy.Mock;

namespace LLMProxy.Cli;

/// <summary>Builds the command line: serve (default), mock, demo. One handler per command.</summary>
internal static class RootCommandFactory
{
    public static async Task<int> InvokeAsync(string[] args, TextWriter? stdout = null, TextWriter? stderr = null)
    {
        stdout ??= Console.Out;
        stderr ??= Console.Error;
        var root = Build(stdout, stderr);
        var parse = root.Parse(args);
        if (parse.Errors.Count > 0)
        {
            foreach (var error in parse.Errors)
            {
                stderr.WriteLine($"llmproxy: {error.Message}");
            }
            stderr.WriteLine("run 'llmproxy --help' for usage");
            return ExitCodes.Usage;
        }
        // Signals are ours (graceful drain), so System.CommandLine must not cut the process short.
        var invocation = new InvocationConfiguration { ProcessTerminationTimeout = null, Output = stdout, Error = stderr };
        return await parse.InvokeAsync(invocation).ConfigureAwait(false);
    }

    private static RootCommand Build(TextWriter stdout, TextWriter stderr)
    {
        var config = new Option<string>("--config", "-c") { Description = "Path of the YAML config file.", DefaultValueFactory = _ => "./config.yaml" };
        var json = new Option<bool>("--json", "-j") { Description = "Log one JSON object per line." };
        var release = new Option<bool>("--release", "-r") { Description = "Production mode: Information level, no banner." };
        var test = new Option<bool>("--test", "-t") { Description = "Validate the config, print a summary and exit (0 valid, 1 invalid)." };
        config.Validators.Add(r =>
        {
            if (r.Tokens.Count == 1 && r.Tokens[0].Value.Length == 0)
            {
                r.AddError("--config needs a file path (got an empty one)");
            }
        });
        var shutdown = new Option<int?>("--shutdown-timeout")
        {
            Description = "Milliseconds to drain in-flight requests on SIGTERM/SIGINT (default: httpServer.shutdownTimeout, 30000).",
            // Our own parser, so a bad value gets a plain message instead of the default one naming the .NET type.
            CustomParser = r =>
            {
                var text = r.Tokens.Count == 1 ? r.Tokens[0].Value : "";
                if (int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var ms))
                {
                    return ms;
                }
                r.AddError($"--shutdown-timeout must be a whole number of milliseconds, 0 or more (got '{text}')");
                return null;
            },
        };

        var root = new RootCommand("LLMProxy: a fast, failover-aware proxy for OpenAI/Anthropic-compatible LLM APIs.");
        root.Options.Add(config);
        root.Options.Add(json);
        root.Options.Add(release);
        root.Options.Add(test);
        root.Options.Add(shutdown);
        foreach (var option in root.Options)
        {
            if (option is VersionOption version)
            {
                version.Aliases.Add("-v");
            }
        }
        root.SetAction((parse, _) => ServeCommand.RunAsync(parse.GetValue(config)!, parse.GetValue(json), parse.GetValue(release),
            parse.GetValue(test), parse.GetValue(shutdown), stdout, stderr));

        root.Subcommands.Add(BuildMock(stdout, stderr));
        root.Subcommands.Add(BuildDemo(json, stdout, stderr));
        return root;
    }

    private static Command BuildMock(TextWriter stdout, TextWriter stderr)
    {
        var port = new Option<int>("--port") { Description = "Port to listen on (0 = any free port).", DefaultValueFactory = _ => 8080 };
        var address = new Option<string>("--address") { Description = "Address to listen on.", DefaultValueFactory = _ => "127.0.0.1" };
        var latency = new Option<int>("--latency-ms") { Description = "Delay before response headers." };
        var status = new Option<int>("--status") { Description = "Status of chat completion answers.", DefaultValueFactory = _ => 200 };
        var failRate = new Option<double>("--fail-rate") { Description = "Fraction (0..1) of requests answered 500." };
        var chunks = new Option<int>("--chunks") { Description = "SSE content chunks per streamed answer.", DefaultValueFactory = _ => 10 };
        var interval = new Option<int>("--chunk-interval-ms") { Description = "Gap between SSE chunks.", DefaultValueFactory = _ => 20 };
        var name = new Option<string>("--name") { Description = "Name echoed in X-Mock-Name.", DefaultValueFactory = _ => "mock" };
        var tpm = new Option<long>("--tpm") { Description = "Tokens per minute per API key, enforced with 429s like a provider (0 = off)." };
        var rpm = new Option<int>("--rpm") { Description = "Requests per minute per API key, enforced with 429s like a provider (0 = off)." };
        var noHeaders = new Option<bool>("--no-ratelimit-headers") { Description = "With --tpm/--rpm: send only retry-after on a 429, no x-ratelimit-* headers." };
        var mock = new Command("mock", "Run the built-in OpenAI-compatible mock upstream.") { port, address, latency, status, failRate, chunks, interval, name, tpm, rpm, noHeaders };
        // Ranges are checked by MockOptions.Validate in the handler (exit 2), where defaults are applied.
        mock.SetAction((parse, _) => MockCommand.RunAsync(new MockOptions
        {
            Port = parse.GetValue(port),
            Address = parse.GetValue(address)!,
            LatencyMs = parse.GetValue(latency),
            Status = parse.GetValue(status),
            FailRate = parse.GetValue(failRate),
            Chunks = parse.GetValue(chunks),
            ChunkIntervalMs = parse.GetValue(interval),
            Name = parse.GetValue(name)!,
            TokensPerMinute = parse.GetValue(tpm),
            RequestsPerMinute = parse.GetValue(rpm),
            RateLimitHeaders = !parse.GetValue(noHeaders),
        }, stdout, stderr));
        return mock;
    }

    private static Command BuildDemo(Option<bool> json, TextWriter stdout, TextWriter stderr)
    {
        var port = new Option<int>("--port") { Description = "Proxy port.", DefaultValueFactory = _ => 3000 };
        var adminPort = new Option<int>("--admin-port") { Description = "Admin port.", DefaultValueFactory = _ => 9000 };
        foreach (var option in new[] { port, adminPort })
        {
            // A usage error, reported before any mock account starts. Only a value that parsed; the parser reports the rest.
            option.Validators.Add(r =>
            {
                if (r.Tokens.Count == 1 && int.TryParse(r.Tokens[0].Value, out var value) && value is < 1 or > 65535)
                {
                    r.AddError($"{option.Name} must be between 1 and 65535 (got {value})");
                }
            });
        }
        // -j is a root option (llmproxy -j demo); demo takes it after its name too (llmproxy demo -j).
        var demo = new Command("demo", "Run mock upstreams and a proxy in front of them from a built-in config.") { port, adminPort, json };
        demo.SetAction((parse, _) => DemoCommand.RunAsync(parse.GetValue(port), parse.GetValue(adminPort), parse.GetValue(json), stdout, stderr));
        return demo;
    }
}
