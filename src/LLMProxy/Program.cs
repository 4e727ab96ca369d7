LLMProxy.Cli.BufferedConsole.Install();
try
{
    return await LLMProxy.Cli.RootCommandFactory.InvokeAsync(args);
}
finally
{
    LLMProxy.Cli.BufferedConsole.Uninstall();
}
