return await LLMProxy.Cli.RootCommandFactory.InvokeAsync(args);
