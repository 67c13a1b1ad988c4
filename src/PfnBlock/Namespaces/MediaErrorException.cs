using PfnBlock.Interop;

namespace PfnBlock.Namespaces;

/// <summary>
/// Data that a media error lost was asked for (a bad block of the namespace's list): what a
/// device-DAX load gets as SIGBUS and a block read as EIO, raised where a library can check,
/// when a range is handed out. <see cref="Exception.HResult"/> is EIO.
/// </summary>
public sealed class MediaErrorException(string message) : IOException(message, Libc.EIO);
