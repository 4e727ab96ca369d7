using System.Text.RegularExpressions;
using LLMProxy.Configuration;
using LLMProxy.Tests.Configuration;
using LLMProxy.Tests.Infrastructure;
using static LLMProxy.Tests.Infrastructure.YamlDocs;

namespace LLMProxy.Tests.Deploy;

/// <summary>
/// <c>deploy/kubernetes/</c> (SPEC §17) read as YAML and checked against the config it embeds, loaded by the proxy's own
/// loader: probes on the admin port's /ping and /health, container ports = forward ports, listeners reachable from
/// outside the pod, the drain covered by terminationGracePeriodSeconds, every <c>${ENV}</c> fed from the Secret, the
/// config mounted where the image reads it, Services and selectors that find the pods, Redis where the config says.
/// No cluster is needed.
/// </summary>
public partial class KubernetesManifestTests
{
    private const string Placeholder = "placeholder-";
    private static readonly string Dir = Path.Combine(ConfigTestYaml.RepoRoot(), "deploy", "kubernetes");

    private sealed record Manifests(List<Dictionary<object, object>> Docs)
    {
        public Dictionary<object, object> One(string kind, string name) =>
            Docs.SingleOrDefault(d => Str(d, "kind") == kind && Str(d, "metadata", "name") == name)
            ?? throw new Xunit.Sdk.XunitException($"no {kind} named {name} in deploy/kubernetes");
    }

    /// <summary>Every resource the kustomization lists, each file existing and each document a named object.</summary>
    private static Manifests Load()
    {
        var kustomization = Assert.Single(LoadAll(File.ReadAllText(Path.Combine(Dir, "kustomization.yaml"))));
        Assert.Equal("Kustomization", Str(kustomization, "kind"));
        var files = List(kustomization.GetValueOrDefault("resources"), "resources").Cast<string>().ToList();
        var onDisk = Directory.GetFiles(Dir, "*.yaml").Select(Path.GetFileName).Where(f => f != "kustomization.yaml").ToHashSet();
        Assert.Equal(onDisk.Order(), files.Order()!);
        var docs = files.SelectMany(f => LoadAll(File.ReadAllText(Path.Combine(Dir, f)))).ToList();
        foreach (var d in docs)
        {
            Assert.False(string.IsNullOrEmpty(Str(d, "apiVersion")), "a document without apiVersion");
            Assert.False(string.IsNullOrEmpty(Str(d, "metadata", "name")), $"a {Str(d, "kind")} without a name");
        }
        Assert.Equal(docs.Count, docs.Select(d => (Str(d, "kind"), Str(d, "metadata", "name"))).Distinct().Count());
        return new Manifests(docs);
    }

    private static Dictionary<object, object> Container(Dictionary<object, object> deployment) =>
        Map(Assert.Single(List(At(deployment, "spec", "template", "spec", "containers"), "containers")), "container");

    private static int Int(object? node, string what) =>
        int.TryParse(node as string, out var v) ? v : throw new Xunit.Sdk.XunitException($"{what}: not an integer ({node})");

    /// <summary>A probe's or a Service's port: a number, or the name of one of the container's ports.</summary>
    private static int ResolvePort(Dictionary<object, object> container, object? port)
    {
        if (int.TryParse(port as string, out var number))
        {
            return number;
        }
        var named = List(container.GetValueOrDefault("ports"), "ports").Single(p => Str(p, "name") == (string?)port);
        return Int(At(named, "containerPort"), "containerPort");
    }

    /// <summary>The env vars the container gets from a Secret, as name → (secret, key).</summary>
    private static Dictionary<string, (string Secret, string Key)> SecretEnv(Dictionary<object, object> container) =>
        List(container.GetValueOrDefault("env"), "env")
            .Where(e => At(e, "valueFrom", "secretKeyRef") is not null)
            .ToDictionary(e => Str(e, "name")!, e => (Str(e, "valueFrom", "secretKeyRef", "name")!, Str(e, "valueFrom", "secretKeyRef", "key")!));

    /// <summary>The embedded config (with its <c>cluster.redis</c>), loaded by the proxy's loader with a value for exactly
    /// the env vars the Secret feeds.</summary>
    private static (ProxyConfig Config, Dictionary<object, object> Raw) LoadEmbeddedConfig(Manifests m)
    {
        var yaml = Str(m.One("ConfigMap", "llmproxy-config"), "data", "config.yaml")!;
        var env = SecretEnv(Container(m.One("Deployment", "llmproxy")));
        var raw = Map(Assert.Single(LoadAll(yaml)), "config.yaml");
        var result = ConfigLoader.LoadYaml(yaml, name => env.ContainsKey(name) ? Placeholder + name : null);
        Assert.True(result.Success, "the ConfigMap's config does not load:\n" + ConfigTestYaml.Describe(result));
        return (result.Config!, raw);
    }

    [Fact]
    public void Config_LoadsWithTheProxysLoader_EveryEnvVarItReadsComesFromTheSecret()
    {
        var m = Load();
        var container = Container(m.One("Deployment", "llmproxy"));
        var env = SecretEnv(container);
        var secret = m.One("Secret", "llmproxy-keys");
        var secretKeys = Map(secret.GetValueOrDefault("stringData"), "stringData");

        var yaml = Str(m.One("ConfigMap", "llmproxy-config"), "data", "config.yaml")!;
        var used = EnvReference().Matches(yaml).Select(x => x.Groups[1].Value).ToHashSet();
        Assert.NotEmpty(used);
        foreach (var name in used)
        {
            Assert.True(env.TryGetValue(name, out var source), $"${{{name}}} is used in the config but the container has no env var {name} from a Secret");
            Assert.Equal("llmproxy-keys", source.Secret);
            Assert.True(secretKeys.ContainsKey(source.Key), $"env {name} reads key {source.Key}, which secret.yaml does not have");
        }
        // Placeholders only: nothing in the repository looks like a real key.
        Assert.All(secretKeys.Values.Cast<string>(), v => Assert.Contains("replace", v, StringComparison.Ordinal));

        var (config, _) = LoadEmbeddedConfig(m);
        Assert.False(string.IsNullOrEmpty(config.HttpServer.Admin.Token), "the admin API is reachable in the cluster: it needs a token");
    }

    [Fact]
    public void Deployment_PortsAndProbes_MatchTheConfigsForwardsAndAdminPort_OnAddressesReachableFromOutsideThePod()
    {
        var m = Load();
        var container = Container(m.One("Deployment", "llmproxy"));
        var (config, _) = LoadEmbeddedConfig(m);
        var admin = config.HttpServer.Admin;
        Assert.Equal("0.0.0.0", admin.Address);
        Assert.All(config.HttpServer.Forwards, f => Assert.Equal("0.0.0.0", f.Address));

        var ports = List(container.GetValueOrDefault("ports"), "ports").ToDictionary(p => Str(p, "name")!, p => Int(At(p, "containerPort"), "containerPort"));
        Assert.Equal(admin.Port, ports["admin"]);
        Assert.Equal(config.HttpServer.Forwards.Select(f => f.Port).Order(), ports.Where(p => p.Key != "admin").Select(p => p.Value).Order());
        foreach (var f in config.HttpServer.Forwards)
        {
            Assert.Equal(f.Port, ports.GetValueOrDefault(f.Name)); // each forward's port is named after it
        }

        Assert.Equal("/ping", Str(container, "livenessProbe", "httpGet", "path"));
        Assert.Equal(admin.Port, ResolvePort(container, At(container, "livenessProbe", "httpGet", "port")));

        // Readiness: /health on the admin port, with the admin token from the environment (SPEC §7: /health needs it).
        var readiness = At(container, "readinessProbe", "httpGet") is { } get
            ? (Path: Str(get, "path"), Port: ResolvePort(container, At(get, "port")), Command: "")
            : ReadinessFromExec(container);
        Assert.Equal("/health", readiness.Path);
        Assert.Equal(admin.Port, readiness.Port);
        if (admin.Token is { Length: > 0 })
        {
            // The loader got "placeholder-NAME" for ${NAME}: the token's variable is what follows the prefix.
            Assert.StartsWith(Placeholder, admin.Token, StringComparison.Ordinal);
            var tokenVar = admin.Token[Placeholder.Length..];
            Assert.Contains($"Authorization: Bearer ${tokenVar}", readiness.Command, StringComparison.Ordinal);
            Assert.True(SecretEnv(container).ContainsKey(tokenVar), $"the readiness probe reads ${tokenVar}, which the container does not get");
        }
    }

    private static (string? Path, int Port, string Command) ReadinessFromExec(Dictionary<object, object> container)
    {
        var command = string.Join(' ', List(At(container, "readinessProbe", "exec", "command"), "readinessProbe.exec.command").Cast<string>());
        var url = LocalUrl().Match(command);
        Assert.True(url.Success, "the readiness probe calls no http://127.0.0.1:<port>/ URL: " + command);
        Assert.Contains("curl -f", command, StringComparison.Ordinal); // -f: a 503 from /health fails the probe
        return (url.Groups["path"].Value, int.Parse(url.Groups["port"].Value, System.Globalization.CultureInfo.InvariantCulture), command);
    }

    [Fact]
    public void Deployment_GracePeriod_CoversPreStopAndTheShutdownTimeout()
    {
        var m = Load();
        var deployment = m.One("Deployment", "llmproxy");
        var container = Container(deployment);
        var (config, raw) = LoadEmbeddedConfig(m);
        Assert.NotNull(At(raw, "httpServer", "shutdownTimeout")); // stated, not left to a default a reader has to look up
        var preStop = List(At(container, "lifecycle", "preStop", "exec", "command"), "preStop.exec.command").Cast<string>().ToList();
        Assert.Equal("sleep", preStop[0]);
        var sleep = int.Parse(preStop[1], System.Globalization.CultureInfo.InvariantCulture);
        Assert.True(sleep >= 5, "preStop must outlast the endpoint removal (a few seconds)");
        var grace = Int(At(deployment, "spec", "template", "spec", "terminationGracePeriodSeconds"), "terminationGracePeriodSeconds");
        var drain = (int)Math.Ceiling(config.HttpServer.ShutdownTimeout / 1000.0);
        Assert.True(grace >= sleep + drain, $"terminationGracePeriodSeconds {grace} < preStop {sleep} s + shutdownTimeout {drain} s");
        Assert.Equal("0", Str(deployment, "spec", "strategy", "rollingUpdate", "maxUnavailable"));
    }

    [Fact]
    public void Deployment_MountsTheConfigWhereTheImageReadsIt_RunsNonRoot_WithAReadOnlyRoot()
    {
        var m = Load();
        var deployment = m.One("Deployment", "llmproxy");
        var container = Container(deployment);
        // The image's CMD names the config file (-c PATH); the manifest keeps that CMD (no args) and mounts the ConfigMap there.
        var cmd = Regex.Match(File.ReadAllText(Path.Combine(ConfigTestYaml.RepoRoot(), "Dockerfile")), @"^CMD \[""-c"", ""(?<path>[^""]+)""", RegexOptions.Multiline);
        Assert.True(cmd.Success, "the Dockerfile's CMD no longer starts with -c PATH");
        Assert.Null(At(container, "args"));
        Assert.Null(At(container, "command"));
        var mount = List(container.GetValueOrDefault("volumeMounts"), "volumeMounts").Single(v => Str(v, "name") == "config");
        Assert.Equal(cmd.Groups["path"].Value, Str(mount, "mountPath"));
        var volume = List(At(deployment, "spec", "template", "spec", "volumes"), "volumes").Single(v => Str(v, "name") == "config");
        var configMap = m.One("ConfigMap", Str(volume, "configMap", "name")!);
        Assert.NotNull(Str(configMap, "data", Str(mount, "subPath")!));

        Assert.Equal("true", Str(deployment, "spec", "template", "spec", "securityContext", "runAsNonRoot"));
        Assert.Equal("true", Str(container, "securityContext", "readOnlyRootFilesystem"));
        Assert.Equal("false", Str(container, "securityContext", "allowPrivilegeEscalation"));
        Assert.Contains(List(container.GetValueOrDefault("volumeMounts"), "volumeMounts"), v => Str(v, "mountPath") == "/tmp");
        Assert.NotNull(At(container, "resources", "requests", "memory"));
        Assert.NotNull(At(container, "resources", "limits", "memory"));
    }

    [Fact]
    public void Services_SelectThePods_AndTargetPortsTheContainerHas_RedisIsWhereTheConfigPointsTo()
    {
        var m = Load();
        foreach (var service in m.Docs.Where(d => Str(d, "kind") == "Service"))
        {
            var name = Str(service, "metadata", "name");
            var selector = Map(At(service, "spec", "selector"), name + ".spec.selector");
            var deployment = m.Docs.Single(d => Str(d, "kind") == "Deployment" && Selects(selector, At(d, "spec", "template", "metadata", "labels")));
            Assert.True(Selects(Map(At(deployment, "spec", "selector", "matchLabels"), "matchLabels"), At(deployment, "spec", "template", "metadata", "labels")));
            var container = Container(deployment);
            foreach (var port in List(At(service, "spec", "ports"), "ports"))
            {
                var target = ResolvePort(container, At(port, "targetPort"));
                Assert.Contains(List(container.GetValueOrDefault("ports"), "ports"), p => Int(At(p, "containerPort"), "containerPort") == target);
            }
        }
        var pdb = m.One("PodDisruptionBudget", "llmproxy");
        Assert.True(Selects(Map(At(pdb, "spec", "selector", "matchLabels"), "pdb"), At(m.One("Deployment", "llmproxy"), "spec", "template", "metadata", "labels")));

        // cluster.redis.url names the Redis Service and its port.
        var (config, _) = LoadEmbeddedConfig(m);
        var url = new Uri(config.Cluster?.Redis?.Url ?? throw new Xunit.Sdk.XunitException("configmap.yaml: no cluster.redis.url"));
        Assert.Equal("redis", url.Scheme);
        var redis = m.One("Service", url.Host);
        Assert.Contains(List(At(redis, "spec", "ports"), "ports"), p => Int(At(p, "port"), "port") == url.Port);
        var policy = m.One("NetworkPolicy", "llmproxy-redis");
        Assert.True(Selects(Map(At(policy, "spec", "podSelector", "matchLabels"), "podSelector"), At(m.One("Deployment", url.Host), "spec", "template", "metadata", "labels")));
    }

    private static bool Selects(Dictionary<object, object> selector, object? labels) =>
        labels is Dictionary<object, object> l && selector.All(kv => l.TryGetValue(kv.Key, out var v) && Equals(v, kv.Value));

    [GeneratedRegex(@"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")]
    private static partial Regex EnvReference();

    [GeneratedRegex(@"http://127\.0\.0\.1:(?<port>[0-9]+)(?<path>/[^\s'""]*)")]
    private static partial Regex LocalUrl();
}
