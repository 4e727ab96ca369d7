# Multi-stage build: SDK to publish, ASP.NET runtime to run, as a non-root user.
FROM mcr.microsoft.com/dotnet/sdk:10.0 AS build
WORKDIR /src
COPY global.json Directory.Build.props Directory.Packages.props LLMProxy.slnx ./
COPY src/LLMProxy/LLMProxy.csproj src/LLMProxy/
RUN dotnet restore src/LLMProxy/LLMProxy.csproj
COPY src/ src/
RUN dotnet publish src/LLMProxy/LLMProxy.csproj -c Release -o /app --no-restore

FROM mcr.microsoft.com/dotnet/aspnet:10.0 AS runtime
RUN apt-get update && apt-get install -y --no-install-recommends curl && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY --from=build /app ./
COPY config.default.yaml /app/config.default.yaml
USER app
EXPOSE 3000 9000
# Each client and upstream connection holds a file descriptor: maxConnections defaults to 10000 per forward.
# A Dockerfile cannot raise the limit; run with e.g. `docker run --ulimit nofile=65536:65536 ...` (the runtime
# raises the soft limit to the hard one at start, and the proxy warns when its caps exceed it).
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD curl -fsS http://127.0.0.1:9000/ping || exit 1
ENTRYPOINT ["dotnet", "/app/llmproxy.dll"]
CMD ["-c", "/app/config.yaml", "--release", "--json"]
