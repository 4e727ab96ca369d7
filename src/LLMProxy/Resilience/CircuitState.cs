namespace LLMProxy.Resilience;

/// <summary>Breaker state; the numeric values are exported as the breaker-state metric.</summary>
internal enum CircuitState
{
    Closed = 0,
    HalfOpen = 1,
    Open = 2,
}
