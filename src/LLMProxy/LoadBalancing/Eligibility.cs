namespace LLMProxy.LoadBalancing;

/// <summary>Helpers every balancer uses on the eligibility span.</summary>
internal static class Eligibility
{
    public static void CheckLength(ReadOnlySpan<bool> eligible, int count)
    {
        if (eligible.Length != count)
        {
            ThrowLengthMismatch(eligible.Length, count);
        }
    }

    private static void ThrowLengthMismatch(int got, int count) =>
        throw new ArgumentException($"eligible has {got} entries but the group has {count} members.", "eligible");

    /// <summary>Index of the <paramref name="k"/>-th (0-based) true entry; caller guarantees it exists.</summary>
    public static int Nth(ReadOnlySpan<bool> eligible, int k)
    {
        for (int i = 0; i < eligible.Length; i++)
        {
            if (eligible[i] && k-- == 0)
            {
                return i;
            }
        }

        return -1;
    }

    public static int Count(ReadOnlySpan<bool> eligible)
    {
        int n = 0;
        foreach (bool e in eligible)
        {
            if (e)
            {
                n++;
            }
        }

        return n;
    }
}
