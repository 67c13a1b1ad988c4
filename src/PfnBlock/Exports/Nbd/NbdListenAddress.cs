using System.Globalization;
using System.Net;
using System.Net.Sockets;

namespace PfnBlock.Exports.Nbd;

/// <summary>Where a server listens: <c>tcp:HOST:PORT</c> or <c>unix:PATH</c>.</summary>
/// <param name="EndPoint">The endpoint to bind.</param>
public sealed record NbdListenAddress(EndPoint EndPoint)
{
    /// <summary>The IANA port of NBD.</summary>
    public const int DefaultPort = 10809;

    /// <summary>The default: loopback only, port 10809.</summary>
    public static NbdListenAddress Default { get; } = new(new IPEndPoint(IPAddress.Loopback, DefaultPort));

    /// <summary>Parses <c>tcp:HOST:PORT</c> (HOST an IP address or <c>localhost</c>; IPv6 in brackets) or <c>unix:PATH</c>.</summary>
    /// <exception cref="FormatException">Not a listen address; the message says why.</exception>
    public static NbdListenAddress Parse(string text)
    {
        if (text.StartsWith("unix:", StringComparison.Ordinal) && text.Length > 5)
            return new NbdListenAddress(new UnixDomainSocketEndPoint(text[5..]));
        if (text.StartsWith("tcp:", StringComparison.Ordinal))
        {
            string rest = text[4..];
            int colon = rest.LastIndexOf(':');
            if (colon > 0 && int.TryParse(rest[(colon + 1)..], NumberStyles.None, CultureInfo.InvariantCulture, out int port) && port <= 65535)
            {
                string host = rest[..colon].Trim('[', ']');
                IPAddress? address = host == "localhost" ? IPAddress.Loopback : IPAddress.TryParse(host, out IPAddress? a) ? a : null;
                if (address is not null) return new NbdListenAddress(new IPEndPoint(address, port));
            }
        }
        throw new FormatException($"invalid listen address '{text}': expected tcp:HOST:PORT (HOST an IP address) or unix:PATH");
    }

    /// <summary>The address as a command line would spell it.</summary>
    public override string ToString() => EndPoint switch
    {
        UnixDomainSocketEndPoint u => $"unix:{u}",
        IPEndPoint { AddressFamily: AddressFamily.InterNetworkV6 } ip => $"tcp:[{ip.Address}]:{ip.Port}",
        IPEndPoint ip => $"tcp:{ip.Address}:{ip.Port}",
        _ => EndPoint.ToString() ?? "",
    };
}
