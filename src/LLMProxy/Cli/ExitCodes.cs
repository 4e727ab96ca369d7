namespace LLMProxy.Cli;

internal static class ExitCodes
{
    public const int Ok = 0;
    /// <summary>Invalid config, unreadable file, or a port that cannot be bound.</summary>
    public const int ConfigOrStartup = 1;
    /// <summary>Command-line usage error.</summary>
    public const int Usage = 2;
}
