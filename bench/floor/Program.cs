// The floor of a Kestrel-based proxy on this machine, for bench/run.sh (BENCH_FLOOR=1). Two modes, each with the
// socket settings LLMProxy runs with (inline socket completions and inline Kestrel scheduling; the script sets the
// same DOTNET_SYSTEM_NET_SOCKETS_* variables LLMProxy sets for itself):
//   floor kestrel PORT            Kestrel reads the request body and answers the mock's chat.completion itself:
//                                 the server half of a proxy, with no upstream exchange at all.
//   floor yarp PORT UP1 [UP2...]  a bare YARP forwarder (IHttpForwarder, SocketsHttpHandler, no transforms, no
//                                 logging, no metrics), round robin over the upstream ports: the whole proxy path
//                                 with nothing of LLMProxy's own.
//   floor raw PORT UP1 [UP2...]   Kestrel plus the least an HTTP/1.1 proxy can do on .NET sockets: pooled upstream
//                                 sockets, the request (fixed head + the client's body) in one send, the answer read
//                                 by its Content-Length and written back — no header forwarding, no checks. What an
//                                 own forwarder without YARP and HttpClient could at best cost (issue 13, point 3).
//   floor raw-headers PORT UP...  the same, but forwarding like a proxy must: the client's path, query and end-to-end
//                                 headers written into the upstream head, the answer's status and headers parsed into
//                                 Kestrel's response (strings allocated as a real forwarder would).
//   floor httpclient PORT UP...   a forwarder on HttpClient without YARP: the client's body buffered and sent as one
//                                 ByteArrayContent (head and body in one write), end-to-end headers copied into the
//                                 HttpRequestMessage and the answer's status and headers into Kestrel's response, the
//                                 body copied from the response stream — splits YARP's cost from HttpClient's.
using System.Net;
using System.Text;
using Microsoft.AspNetCore.Server.Kestrel.Transport.Sockets;
using Yarp.ReverseProxy.Forwarder;

if (args.Length < 2 || !int.TryParse(args[1], out var port) || args[0] is not ("kestrel" or "yarp" or "raw" or "raw-headers" or "httpclient") || args[0] != "kestrel" && args.Length < 3)
{
    Console.Error.WriteLine("usage: floor kestrel PORT | floor yarp|raw|raw-headers|httpclient PORT UPSTREAM_PORT...");
    return 2;
}

// Headers a forwarder does not copy as they are (the floors that forward headers).
var hopByHop = new HashSet<string>(["Connection", "Keep-Alive", "Transfer-Encoding", "Upgrade", "TE", "Trailer", "Proxy-Connection", "Host", "Content-Length"],
    StringComparer.OrdinalIgnoreCase);

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
else if (args[0] == "raw-headers")
{
    var pools = args[2..].Select(p => (Port: int.Parse(p), Idle: new System.Collections.Concurrent.ConcurrentBag<System.Net.Sockets.Socket>())).ToArray();
    var next = 0;
    app.Run(async context =>
    {
        var (upstreamPort, idle) = pools[(int)((uint)Interlocked.Increment(ref next) % (uint)pools.Length)];
        var buffer = System.Buffers.ArrayPool<byte>.Shared.Rent(32 * 1024);
        try
        {
            var request = context.Request;
            var at = 0;
            void Put(string text) => at += Encoding.ASCII.GetBytes(text, 0, text.Length, buffer, at);
            Put(request.Method);
            Put(" ");
            Put(request.Path.Value ?? "/");
            Put(request.QueryString.Value ?? "");
            Put(" HTTP/1.1\r\nHost: 127.0.0.1:");
            Put(upstreamPort.ToString(System.Globalization.CultureInfo.InvariantCulture));
            Put("\r\n");
            foreach (var header in request.Headers)
            {
                if (!hopByHop.Contains(header.Key))
                {
                    Put(header.Key);
                    Put(": ");
                    Put(header.Value.ToString());
                    Put("\r\n");
                }
            }
            Put("Content-Length: ");
            var lengthAt = at;
            Put("000000\r\n\r\n");
            var bodyAt = at;
            var bodyLength = 0;
            int read;
            while ((read = await request.Body.ReadAsync(buffer.AsMemory(bodyAt + bodyLength, 8 * 1024), context.RequestAborted)) > 0)
            {
                bodyLength += read;
            }
            bodyLength.TryFormat(buffer.AsSpan(lengthAt, 6), out _, "D6", System.Globalization.CultureInfo.InvariantCulture);
            if (!idle.TryTake(out var socket))
            {
                socket = new System.Net.Sockets.Socket(System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Tcp) { NoDelay = true };
                await socket.ConnectAsync(IPAddress.Loopback, upstreamPort);
            }
            await socket.SendAsync(buffer.AsMemory(0, bodyAt + bodyLength));
            var (answerAt, length) = await ReadAnswerAsync(socket, buffer, head =>
            {
                // Status line, then every header into Kestrel's response.
                var lines = head.Split("\r\n");
                context.Response.StatusCode = int.Parse(lines[0].AsSpan(9, 3), provider: System.Globalization.CultureInfo.InvariantCulture);
                var contentLength = -1;
                foreach (var line in lines.AsSpan(1))
                {
                    var colon = line.IndexOf(':');
                    var name = line[..colon];
                    var value = line[(colon + 1)..].Trim();
                    if (name.Equals("Content-Length", StringComparison.OrdinalIgnoreCase))
                    {
                        contentLength = int.Parse(value, System.Globalization.CultureInfo.InvariantCulture);
                    }
                    else if (!hopByHop.Contains(name))
                    {
                        context.Response.Headers.Append(name, value);
                    }
                }
                return contentLength;
            });
            idle.Add(socket);
            context.Response.ContentLength = length;
            await context.Response.Body.WriteAsync(buffer.AsMemory(answerAt, length), context.RequestAborted);
        }
        finally
        {
            System.Buffers.ArrayPool<byte>.Shared.Return(buffer);
        }
    });
}
else if (args[0] == "raw")
{
    var pools = args[2..].Select(p => (Port: int.Parse(p), Idle: new System.Collections.Concurrent.ConcurrentBag<System.Net.Sockets.Socket>())).ToArray();
    var next = 0;
    app.Run(async context =>
    {
        var (upstreamPort, idle) = pools[(int)((uint)Interlocked.Increment(ref next) % (uint)pools.Length)];
        var buffer = System.Buffers.ArrayPool<byte>.Shared.Rent(16 * 1024);
        try
        {
            // The client's body, behind a head written for it.
            var bodyAt = 256;
            var bodyLength = 0;
            int read;
            while ((read = await context.Request.Body.ReadAsync(buffer.AsMemory(bodyAt + bodyLength, 8 * 1024), context.RequestAborted)) > 0)
            {
                bodyLength += read;
            }
            var head = Encoding.ASCII.GetBytes($"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{upstreamPort}\r\nContent-Type: application/json\r\nContent-Length: {bodyLength}\r\n\r\n");
            var start = bodyAt - head.Length;
            head.CopyTo(buffer, start);
            if (!idle.TryTake(out var socket))
            {
                socket = new System.Net.Sockets.Socket(System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Tcp) { NoDelay = true };
                await socket.ConnectAsync(IPAddress.Loopback, upstreamPort);
            }
            await socket.SendAsync(buffer.AsMemory(start, head.Length + bodyLength));
            var (answerAt, length) = await ReadAnswerAsync(socket, buffer, head =>
            {
                var at = head.IndexOf("Content-Length:", StringComparison.OrdinalIgnoreCase) + "Content-Length:".Length;
                var end = head.IndexOf('\r', at);
                return int.Parse(head.AsSpan(at, (end < 0 ? head.Length : end) - at).Trim());
            });
            idle.Add(socket);
            context.Response.ContentType = "application/json";
            context.Response.ContentLength = length;
            await context.Response.Body.WriteAsync(buffer.AsMemory(answerAt, length), context.RequestAborted);
        }
        finally
        {
            System.Buffers.ArrayPool<byte>.Shared.Return(buffer);
        }
    });
}
else if (args[0] == "httpclient")
{
    var upstreams = args[2..].Select(p => new Uri($"http://127.0.0.1:{int.Parse(p)}/v1/chat/completions")).ToArray();
    var client = new HttpMessageInvoker(NewHandler());
    var next = 0;
    app.Run(async context =>
    {
        var request = context.Request;
        var body = System.Buffers.ArrayPool<byte>.Shared.Rent(16 * 1024);
        var copy = System.Buffers.ArrayPool<byte>.Shared.Rent(16 * 1024);
        try
        {
            var bodyLength = 0;
            int read;
            while ((read = await request.Body.ReadAsync(body.AsMemory(bodyLength, 8 * 1024), context.RequestAborted)) > 0)
            {
                bodyLength += read;
            }
            using var message = new HttpRequestMessage(HttpMethod.Post, upstreams[(int)((uint)Interlocked.Increment(ref next) % (uint)upstreams.Length)]);
            var content = new ByteArrayContent(body, 0, bodyLength);
            foreach (var header in request.Headers)
            {
                if (!hopByHop.Contains(header.Key) && !message.Headers.TryAddWithoutValidation(header.Key, (IEnumerable<string>)header.Value))
                {
                    content.Headers.TryAddWithoutValidation(header.Key, (IEnumerable<string>)header.Value);
                }
            }
            message.Content = content;
            using var answer = await client.SendAsync(message, context.RequestAborted);
            var response = context.Response;
            response.StatusCode = (int)answer.StatusCode;
            foreach (var header in answer.Headers.NonValidated)
            {
                if (!hopByHop.Contains(header.Key))
                {
                    response.Headers.Append(header.Key, header.Value.ToString());
                }
            }
            foreach (var header in answer.Content.Headers.NonValidated)
            {
                if (!hopByHop.Contains(header.Key))
                {
                    response.Headers.Append(header.Key, header.Value.ToString());
                }
            }
            response.ContentLength = answer.Content.Headers.ContentLength;
            await using var stream = await answer.Content.ReadAsStreamAsync(context.RequestAborted);
            while ((read = await stream.ReadAsync(copy, context.RequestAborted)) > 0)
            {
                await response.Body.WriteAsync(copy.AsMemory(0, read), context.RequestAborted);
            }
        }
        finally
        {
            System.Buffers.ArrayPool<byte>.Shared.Return(body);
            System.Buffers.ArrayPool<byte>.Shared.Return(copy);
        }
    });
}
else
{
    var upstreams = args[2..].Select(p => $"http://127.0.0.1:{int.Parse(p)}/").ToArray();
    var handler = NewHandler();
    handler.ConnectCallback = async (context, ct) =>
    {
        var socket = new System.Net.Sockets.Socket(System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Tcp) { NoDelay = true };
        await socket.ConnectAsync(context.DnsEndPoint, ct);
        return new System.Net.Sockets.NetworkStream(socket, ownsSocket: true);
    };
    var invoker = new HttpMessageInvoker(handler);
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

// The HttpClient handler of the floors that use one: no proxy, redirects, decompression, cookies or trace headers.
static SocketsHttpHandler NewHandler() => new()
{
    UseProxy = false,
    AllowAutoRedirect = false,
    AutomaticDecompression = DecompressionMethods.None,
    UseCookies = false,
    ActivityHeadersPropagator = null,
    MaxConnectionsPerServer = 100,
};

// Reads an answer framed by Content-Length into buffer (head and body); onHead gets the head's text once and returns
// the Content-Length. Returns where the body starts and its length.
static async Task<(int BodyAt, int Length)> ReadAnswerAsync(System.Net.Sockets.Socket socket, byte[] buffer, Func<string, int> onHead)
{
    var received = 0;
    var length = -1;
    while (true)
    {
        var n = await socket.ReceiveAsync(buffer.AsMemory(received, buffer.Length - received));
        if (n == 0)
        {
            throw new IOException("upstream closed");
        }
        received += n;
        var headEnd = buffer.AsSpan(0, received).IndexOf("\r\n\r\n"u8);
        if (headEnd < 0)
        {
            continue;
        }
        if (length < 0)
        {
            length = onHead(Encoding.Latin1.GetString(buffer, 0, headEnd));
        }
        if (received >= headEnd + 4 + length)
        {
            return (headEnd + 4, length);
        }
    }
}
