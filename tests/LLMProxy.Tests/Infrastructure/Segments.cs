using System.Buffers;

namespace LLMProxy.Tests.Infrastructure;

/// <summary>A byte sequence cut into segments where the test says, as a pipe hands over data that arrived in pieces.</summary>
public static class Segments
{
    /// <summary><paramref name="bytes"/> as one sequence of segments starting at each of <paramref name="cuts"/> (ascending).</summary>
    public static ReadOnlySequence<byte> Split(byte[] bytes, params int[] cuts)
    {
        var starts = new[] { 0 }.Concat(cuts).ToArray();
        var first = new Segment(bytes.AsMemory(0, Length(0)));
        var last = first;
        for (var i = 1; i < starts.Length; i++)
        {
            last = last.Append(bytes.AsMemory(starts[i], Length(i)));
        }
        return new ReadOnlySequence<byte>(first, 0, last, last.Memory.Length);

        int Length(int i) => (i + 1 < starts.Length ? starts[i + 1] : bytes.Length) - starts[i];
    }

    private sealed class Segment : ReadOnlySequenceSegment<byte>
    {
        public Segment(ReadOnlyMemory<byte> memory) => Memory = memory;

        public Segment Append(ReadOnlyMemory<byte> memory)
        {
            var next = new Segment(memory) { RunningIndex = RunningIndex + Memory.Length };
            Next = next;
            return next;
        }
    }
}
