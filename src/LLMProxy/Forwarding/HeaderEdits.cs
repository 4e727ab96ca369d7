namespace LLMProxy.Forwarding;

/// <summary>
/// Header edits on an outgoing request that work for any header name. .NET keeps request headers
/// (<c>Authorization</c>, <c>Accept</c>) and content headers (<c>Content-Type</c>) in two collections, and its
/// validating <c>Contains</c>/<c>Remove</c> throw when a name is asked of the wrong one; a name the client or the
/// operator chose must never turn into an exception (it used to make every POST a 502). Looking a name up through
/// <c>NonValidated</c> never throws, and a header present in a collection can always be removed from it.
/// </summary>
internal static class HeaderEdits
{
    public static bool Has(HttpRequestMessage message, string name) =>
        message.Headers.NonValidated.Contains(name) || message.Content?.Headers.NonValidated.Contains(name) == true;

    public static void Remove(HttpRequestMessage message, string name)
    {
        if (message.Headers.NonValidated.Contains(name))
        {
            message.Headers.Remove(name);
        }
        if (message.Content is { } content && content.Headers.NonValidated.Contains(name))
        {
            content.Headers.Remove(name);
        }
    }

    /// <summary>Adds a value to whichever collection takes the name. A content header on a request without a body
    /// has nowhere to go and is dropped: there is no content for it to describe.</summary>
    public static void Add(HttpRequestMessage message, string name, string value)
    {
        if (!message.Headers.TryAddWithoutValidation(name, value))
        {
            message.Content?.Headers.TryAddWithoutValidation(name, value);
        }
    }

    public static void Set(HttpRequestMessage message, string name, string value)
    {
        Remove(message, name);
        Add(message, name, value);
    }
}
