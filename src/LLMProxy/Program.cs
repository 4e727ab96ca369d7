// Socket completions run their continuations inline on the epoll threads instead of queueing them to the
// thread pool: the proxy's request path is fully asynchronous (logging is a lock-free enqueue), and this
// removes a thread hop per socket operation — the single biggest CPU saving measured (bench/RESULTS.md).
// Read once by System.Net.Sockets on first use, so it is set before anything opens a socket; an operator's
// own setting wins.
if (Environment.GetEnvironmentVariable("DOTNET_SYSTEM_NET_SOCKETS_INLINE_COMPLETIONS") is null)
{
    Environment.SetEnvironmentVariable("DOTNET_SYSTEM_NET_SOCKETS_INLINE_COMPLETIONS", "1");
}
return await LLMProxy.Cli.RootCommandFactory.InvokeAsync(args);
