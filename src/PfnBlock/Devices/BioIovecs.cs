using PfnBlock.Block;
using PfnBlock.Interop;
using PfnBlock.Memory;

namespace PfnBlock.Devices;

/// <summary>
/// A bio's segments as a native <c>iovec</c> array, for devices that hand them to the kernel or a
/// library (preadv/pwritev through io_uring, librbd's readv/writev): the frames are mapped
/// ("kmapped") through the address space, and segments that are adjacent in memory as well as in
/// the bio go out as one iovec.
/// </summary>
internal static unsafe class BioIovecs
{
    /// <summary>
    /// Fills <paramref name="iov"/> (room for <paramref name="max"/>) from <paramref name="bio"/>'s
    /// remaining segments; returns the count, or 0 when a frame is not reachable through
    /// <paramref name="space"/>, more than <paramref name="max"/> iovecs are needed, or the bio has no data.
    /// </summary>
    public static int Fill(PhysicalAddressSpace space, Bio bio, iovec* iov, int max)
    {
        int n = 0;
        byte* prevEnd = null;
        foreach (BioVec seg in bio.Segments)
        {
            byte* p = space.TryKmap(seg.Pfn, seg.Offset, seg.Length);
            if (p == null) return 0;
            if (p == prevEnd) iov[n - 1].iov_len += seg.Length;
            else
            {
                if (n == max) return 0;
                iov[n].iov_base = p;
                iov[n].iov_len = seg.Length;
                n++;
            }
            prevEnd = p + seg.Length;
        }
        return n;
    }
}
