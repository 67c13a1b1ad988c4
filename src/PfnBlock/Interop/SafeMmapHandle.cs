using System.Runtime.InteropServices;

namespace PfnBlock.Interop;

/// <summary>
/// An owned memory mapping (<c>mmap(2)</c>), unmapped exactly once with the length it was mapped
/// with when disposed (or finalized, if its owner is dropped without disposing).
/// </summary>
/// <remarks>
/// Users take <see cref="Address"/> once at setup and derive every pointer from it (a region's
/// base address, a ring's head and tail); nothing on the I/O path touches the handle. That is safe
/// because each owner keeps the handle reachable and undisposed while its memory can be reached:
/// a region stays registered in its address space until it is disposed, and devices dispose their
/// namespace, pool or ring only after their last I/O completed.
/// </remarks>
internal sealed unsafe class SafeMmapHandle : SafeHandle
{
    private SafeMmapHandle(nuint length) : base(Libc.MAP_FAILED, ownsHandle: true) => Length = length;

    /// <summary>Bytes mapped (what <c>munmap</c> is given).</summary>
    public nuint Length { get; }

    /// <summary>The first mapped byte. Meaningless once the handle is disposed.</summary>
    public byte* Address => (byte*)handle;

    /// <inheritdoc/>
    public override bool IsInvalid => handle == Libc.MAP_FAILED;

    /// <summary>
    /// <c>mmap(NULL, length, prot, flags, fd, offset)</c>. Null when the call failed; errno is
    /// then still <see cref="Libc.Errno"/> for the caller to report or act on (e.g. the MAP_SYNC fallback).
    /// </summary>
    public static SafeMmapHandle? TryMap(nuint length, int prot, int flags, int fd, long offset)
    {
        // Allocated before the call, so an out-of-memory here cannot leak a mapping.
        var mapping = new SafeMmapHandle(length);
        nint p = Libc.mmap(0, length, prot, flags, fd, offset);
        if (p == Libc.MAP_FAILED)
        {
            GC.SuppressFinalize(mapping); // never valid: nothing to release, and no P/Invoke to clobber errno
            return null;
        }
        mapping.SetHandle(p);
        return mapping;
    }

    /// <summary>
    /// As <see cref="TryMap"/>, at a virtual address that is a multiple of <paramref name="alignment"/>:
    /// a transparent huge page can back a file mapping only where the virtual address and the file
    /// offset agree modulo 2 MiB. An inaccessible reservation of length + alignment is made first,
    /// the file is mapped over its aligned part (MAP_FIXED), and the slack on either side is
    /// returned, so only the mapping itself is ever released.
    /// </summary>
    public static SafeMmapHandle? TryMapAligned(nuint length, nuint alignment, int prot, int flags, int fd, long offset)
    {
        var mapping = new SafeMmapHandle(length);
        nint reserved = Libc.mmap(0, length + alignment, Libc.PROT_NONE, Libc.MAP_PRIVATE | Libc.MAP_ANONYMOUS | Libc.MAP_NORESERVE, -1, 0);
        if (reserved == Libc.MAP_FAILED)
        {
            GC.SuppressFinalize(mapping);
            return null;
        }
        nint aligned = (nint)(((nuint)reserved + alignment - 1) & ~(alignment - 1));
        nint p = Libc.mmap(aligned, length, prot, flags | Libc.MAP_FIXED, fd, offset);
        if (p == Libc.MAP_FAILED)
        {
            int errno = Libc.Errno;
            _ = Libc.munmap(reserved, length + alignment);
            Marshal.SetLastPInvokeError(errno); // the caller reports the mmap's errno, not the cleanup's
            GC.SuppressFinalize(mapping);
            return null;
        }
        nuint head = (nuint)(aligned - reserved);
        if (head != 0) _ = Libc.munmap(reserved, head);
        nuint tail = alignment - head;
        if (tail != 0) _ = Libc.munmap(aligned + (nint)length, tail);
        mapping.SetHandle(p);
        return mapping;
    }

    /// <inheritdoc/>
    protected override bool ReleaseHandle() => Libc.munmap(handle, Length) == 0;
}
