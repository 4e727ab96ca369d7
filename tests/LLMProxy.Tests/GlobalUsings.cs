global using static LLMProxy.Tests.Infrastructure.Eventually;
global using static LLMProxy.Tests.Infrastructure.MetricsText;
