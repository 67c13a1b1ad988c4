using System.Diagnostics;
using PfnBlock.Block;
using PfnBlock.Interop;

namespace PfnBlock.Exports.Nbd;

// Direct writes: a large write whose payload has not all arrived with its header is received
// from the socket straight into the device's memory (IDirectWriteDevice), not into the receive
// buffer and then copied by a bio. The kernel's copy out of the socket is the only copy, and the
// payload needs no receive window from the memory budget.
internal sealed unsafe partial class NbdConnection
{
    /// <summary>Writes this large or larger (payload bytes) may be received directly; <see cref="int.MaxValue"/>: never.</summary>
    private int _directWriteBytes = int.MaxValue;
    /// <summary>The last request was a direct write: the next receive takes one header only (a stream of large writes then sends every payload direct).</summary>
    private bool _headerOnly;

    private enum DirectReceive
    {
        /// <summary>Not taken (device, range or request not suited): the caller receives the payload as usual.</summary>
        NotTaken,
        /// <summary>The payload was received and the write completed (its reply is queued).</summary>
        Received,
        /// <summary>The client went away mid-payload: the write failed, the connection ends.</summary>
        Disconnected,
    }

    /// <summary>
    /// Receives the payload of a write into the device: the <paramref name="here"/> bytes already
    /// in the receive buffer at <paramref name="payload"/> are copied, the rest comes from the
    /// socket in place. Requests the usual path would refuse (validation, alignment) are left to it.
    /// </summary>
    private DirectReceive TryReceiveDirect(int fd, ulong cookie, NbdCommandFlags flags, ulong offset, uint length, byte* payload, int here)
    {
        NbdExport export = _export!;
        IDirectWriteDevice device = export.DirectWrite!;
        if (!export.IsAligned(offset, length)
            || NbdRequestValidator.Validate(export, _negotiation!, NbdCommand.Write, flags, offset, length) != NbdError.None)
            return DirectReceive.NotTaken;
        // The batch's replies so far go out now rather than wait for the whole payload.
        lock (_sync) _writer!.EndBatch();
        // Slot and gate before the pin: waiting for a slot while holding a pin could wait on a discard that waits on the pin.
        NbdRequest r = AcquireSlot();
        export.WriteGate.Enter(_writes);
        if (!device.BeginDirectWrite((long)offset, (int)length, out DirectWrite write))
        {
            NbdWriteGate.Exit(_writes);
            lock (_sync) r.Bio.Release();
            lock (_sync) _writer!.BeginBatch();
            return DirectReceive.NotTaken;
        }
        r.Reset(cookie, NbdCommand.Write, flags, offset, length, Stopwatch.GetTimestamp());
        r.WriteGateHeld = true;
        Buffer.MemoryCopy(payload, write.Address, length, here);
        long got = here + ReceiveExactly(fd, write.Address + here, (int)length - here);
        BlockStatus status = device.EndDirectWrite(ref write, got, (flags & NbdCommandFlags.Fua) != 0 ? BioFlags.Fua : BioFlags.None);
        // After a broken payload the reply still queues, so the slot goes back the usual way (the writer drops it if it cannot send).
        Complete(r, got == length ? NbdRequestValidator.FromBlockStatus(status, NbdCommand.Write) : NbdError.Io);
        if (got < length) return DirectReceive.Disconnected;
        lock (_sync) _writer!.BeginBatch();
        return DirectReceive.Received;
    }

    /// <summary>Receives up to <paramref name="count"/> bytes into <paramref name="dst"/>, as few calls as the socket allows; fewer only at end of stream or on an error.</summary>
    private static int ReceiveExactly(int fd, byte* dst, int count)
    {
        int got = 0;
        while (got < count)
        {
            // MSG_WAITALL: one call sleeps through the pieces a large payload arrives in.
            nint n = Libc.recv(fd, dst + got, (nuint)(count - got), Libc.MSG_WAITALL);
            if (n > 0)
            {
                got += (int)n;
                continue;
            }
            if (n == 0) break;
            int errno = Libc.Errno;
            if (errno == Libc.EINTR) continue;
            if (errno != Libc.EAGAIN) break;
            // The idle timeout (SO_RCVTIMEO) or a non-blocking socket: mid-payload, just wait for the rest.
            Libc.PollFd p = new() { Fd = fd, Events = Libc.POLLIN };
            _ = Libc.poll(&p, 1, -1);
        }
        return got;
    }
}
