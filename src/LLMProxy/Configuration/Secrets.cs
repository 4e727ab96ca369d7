namespace LLMProxy.Configuration;

/// <summary>Shows secrets (API keys, passwords, admin token) in logs and summaries without revealing them.</summary>
public static class Secrets
{
    /// <summary><c>sk-…abcd</c>: the first 3 and last 4 characters for secrets of 12 or more characters,
    /// otherwise <c>****</c> (too short to show any part safely).</summary>
    public static string Redact(string? secret) =>
        secret is { Length: >= 12 } ? $"{secret[..3]}…{secret[^4..]}" : "****";
}
