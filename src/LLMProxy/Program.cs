// Runtime settings read once by System.Net.Sockets when the first socket is made, so they are set here before
// anything opens one (see Hosting/SocketTuning.cs for what and why; an operator's own setting always wins).
LLMProxy.Hosting.SocketTuning.Apply(Environment.ProcessorCount);
return await LLMProxy.Cli.RootCommandFactory.InvokeAsync(args);
