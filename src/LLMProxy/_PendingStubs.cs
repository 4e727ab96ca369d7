// TEMPORARY: signatures of components being written on other branches; deleted when they merge.
using System.Net;
using LLMProxy.Configuration;
namespace LLMProxy.Configuration
{
    public static class ConfigLoader
    {
        public static ConfigLoadResult LoadFile(string path, Func<string, string?>? env = null) => throw new NotImplementedException();
        public static ConfigLoadResult LoadYaml(string yaml, Func<string, string?>? env = null) => throw new NotImplementedException();
    }
    public static class ConfigSummary { public static string Summarize(ProxyConfig c) => ""; }
}
