namespace LLMProxy.Forwarding;

/// <summary>
/// Content that stands in for another on its way through the proxy (an upstream's answer read through a stream of the
/// proxy's, a client's body flushed piece by piece): carries the inner content's headers as they came, owns the inner
/// content, and computes no length of its own (a copied Content-Length header still says it).
/// </summary>
internal abstract class WrappedContent : HttpContent
{
    protected WrappedContent(HttpContent inner)
    {
        Inner = inner;
        foreach (var header in inner.Headers.NonValidated)
        {
            foreach (var value in header.Value)
            {
                Headers.TryAddWithoutValidation(header.Key, value);
            }
        }
    }

    protected HttpContent Inner { get; }

    protected sealed override bool TryComputeLength(out long length)
    {
        length = 0;
        return false;
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            Inner.Dispose();
        }
        base.Dispose(disposing);
    }
}
