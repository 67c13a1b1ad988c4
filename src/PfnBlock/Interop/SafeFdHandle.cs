using System.Diagnostics;
using Microsoft.Win32.SafeHandles;

namespace PfnBlock.Interop;

/// <summary>
/// An owned file descriptor, closed exactly once when disposed (or, if its owner is dropped
/// without disposing, when the handle is finalized) — what dotnet/runtime's
/// <c>SafeFileHandle</c> is on Unix, without its advisory locks and file-type caching.
/// </summary>
/// <remarks>
/// System calls take the raw <see cref="Fd"/>, not the handle, so the I/O path pays no
/// <c>DangerousAddRef</c>/<c>Release</c> per call. That is safe because every owner (a namespace
/// file, a file engine, an io_uring ring) disposes the handle only after its last I/O has
/// completed; hot paths read <see cref="Fd"/> once at setup and keep the handle for its lifetime.
/// </remarks>
internal sealed class SafeFdHandle : SafeHandleMinusOneIsInvalid
{
    /// <summary>
    /// An empty (invalid) handle. Allocate it before the call that creates the descriptor and
    /// hand the result to <see cref="Own"/>, so an out-of-memory between the two cannot leak a
    /// descriptor (dotnet/runtime's rule: "Allocate the handles first").
    /// </summary>
    public SafeFdHandle() : base(ownsHandle: true) { }

    /// <summary>
    /// Takes ownership of <paramref name="fd"/>, the return value of a call that creates a
    /// descriptor; -1 (failure, errno set) leaves the handle invalid and errno untouched.
    /// </summary>
    public void Own(int fd)
    {
        Debug.Assert(IsInvalid, "a handle owns one descriptor");
        SetHandle(fd);
    }

    /// <summary>
    /// <c>open(2)</c> into a new handle; invalid (check <see cref="System.Runtime.InteropServices.SafeHandle.IsInvalid"/>, then
    /// <see cref="Libc.Errno"/>) when the call failed.
    /// </summary>
    public static SafeFdHandle Open(string path, int flags, int mode)
    {
        var fd = new SafeFdHandle();
        fd.Own(Libc.open(path, flags, mode));
        return fd;
    }

    /// <summary>The raw descriptor for system calls; -1 when invalid. Meaningless once the handle is disposed.</summary>
    public int Fd => (int)handle;

    /// <inheritdoc/>
    protected override bool ReleaseHandle() => Libc.close((int)handle) == 0;
}
