using System.Net.Sockets;

namespace PfnBlock.Management.Control;

/// <summary>
/// Reads newline-terminated lines from a socket into one buffer, grown as lines need up to the
/// limit. A line longer than the limit is reported once as <see cref="Result.TooLong"/> and
/// skipped up to its newline, so a client that sends too much gets an error and can go on, and
/// the server never holds more than the limit per connection.
/// </summary>
internal sealed class ControlLineReader(Socket socket, int maxLine)
{
    private byte[] _buffer = new byte[Math.Min(4096, maxLine + 1)];
    private int _start, _end;
    private bool _discarding;

    /// <summary>What <see cref="Next"/> found.</summary>
    public enum Result
    {
        /// <summary>A line (without its newline).</summary>
        Line,
        /// <summary>A line over the limit, skipped.</summary>
        TooLong,
        /// <summary>The client closed (a partial last line is dropped).</summary>
        End,
    }

    /// <summary>The next line; the span is valid until the next call.</summary>
    public Result Next(out ReadOnlySpan<byte> line)
    {
        line = default;
        while (true)
        {
            int nl = _buffer.AsSpan(_start, _end - _start).IndexOf((byte)'\n');
            if (nl >= 0)
            {
                int at = _start;
                _start += nl + 1;
                if (_discarding)
                {
                    _discarding = false;
                    continue; // the tail of the long line reported before
                }
                line = _buffer.AsSpan(at, nl);
                return Result.Line;
            }
            if (_end - _start > maxLine)
            {
                // No newline within the limit: report once, then drop bytes until the next newline.
                bool report = !_discarding;
                _discarding = true;
                _start = _end = 0;
                if (report) return Result.TooLong;
            }
            if (_start > 0)
            {
                _buffer.AsSpan(_start, _end - _start).CopyTo(_buffer);
                _end -= _start;
                _start = 0;
            }
            if (_end == _buffer.Length) Array.Resize(ref _buffer, (int)Math.Min(2L * _buffer.Length, maxLine + 1L));
            int n = socket.Receive(_buffer, _end, _buffer.Length - _end, SocketFlags.None);
            if (n == 0) return Result.End;
            _end += n;
        }
    }
}
