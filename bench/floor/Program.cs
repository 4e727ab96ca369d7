// The floor of a Kestrel-based proxy on this machine, for bench/run.sh (BENCH_FLOOR=1). Two modes, each with the
// socket settings LLMProxy runs with (inline socket completions and inline Kestrel scheduling; the script sets the
// same DOTNET_SYSTEM_NET_SOCKETS_* variables LLMProxy sets for itself):
//   floor kestrel PORT            Kestrel reads the request body and answers the mock's chat.completion itself:
//                                 the server half of a proxy, with no upstream exchange at all.
//   floor yarp PORT UP1 [UP2...]  a bare YARP forwarder (IHttpForwarder, SocketsHttpHandler, no transforms, no
//                                 logging, no metrics), round robin over the upstream ports: the whole proxy path
//                                 with nothing of LLMProxy's own.
using System.Net;
using System.Text;
using Microsoft.AspNetCore.Server.Kestrel.Transport.Sockets;
using Yarp.ReverseProxy.Forwarder;

if (args.Length < 2 || !int.TryParse(args[1], out var port) || args[0] is not ("kestrel" or "yarp") || args[0] == "yarp" && args.Length < 3)
{
    Console.Error.WriteLine("usage: floor kestrel PORT | floor yarp PORT UPSTREAM_PORT...");
    return 2;
}

var builder = WebApplication.CreateSlimBuilder();
builder.Logging.ClearProviders();
builder.WebHost.UseSockets(o => o.UnsafePreferInlineScheduling = true);
builder.WebHost.ConfigureKestrel(k =>
{
    k.AddServerHeader = false;
    k.Listen(IPAddress.Loopback, port);
});
builder.Services.AddHttpForwarder();
var app = builder.Build();

if (args[0] == "kestrel")
{
    // The same body the nginx mock answers (bench/lib.sh MOCK_ANSWER, passed in FLOOR_ANSWER).
    var answer = Encoding.UTF8.GetBytes(Environment.GetEnvironmentVariable("FLOOR_ANSWER") ?? throw new InvalidOperationException("FLOOR_ANSWER is not set"));
    var sink = new byte[4096];
    app.Run(async context =>
    {
        while (await context.Request.Body.ReadAsync(sink, context.RequestAborted) > 0)
        {
        }
        context.Response.ContentType = "application/json";
        context.Response.ContentLength = answer.Length;
        await context.Response.Body.WriteAsync(answer, context.RequestAborted);
    });
}
else
{
    var upstreams = args[2..].Select(p => $"http://127.0.0.1:{int.Parse(p)}/").ToArray();
    var invoker = new HttpMessageInvoker(new SocketsHttpHandler
    {
        UseProxy = false,
        AllowAutoRedirect = false,
        AutomaticDecompression = DecompressionMethods.None,
        UseCookies = false,
        ActivityHeadersPropagator = null,
        MaxConnectionsPerServer = 100,
        ConnectCallback = async (context, ct) =>
        {
            var socket = new System.Net.Sockets.Socket(System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Tcp) { NoDelay = true };
            await socket.ConnectAsync(context.DnsEndPoint, ct);
            return new System.Net.Sockets.NetworkStream(socket, ownsSocket: true);
        },
    });
    var config = new ForwarderRequestConfig { ActivityTimeout = TimeSpan.FromSeconds(100) };
    var next = 0;
    app.Run(async context =>
    {
        var forwarder = context.RequestServices.GetRequiredService<IHttpForwarder>();
        var destination = upstreams[(int)((uint)Interlocked.Increment(ref next) % (uint)upstreams.Length)];
        await forwarder.SendAsync(context, destination, invoker, config, HttpTransformer.Empty);
    });
}

app.Run();
return 0;
