using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using PfnBlock.Exports.Nbd;

namespace PfnBlock.Tests.Nbd;

/// <summary>STARTTLS with a configured certificate, driven by libnbd's tools over loopback TCP.</summary>
public sealed class NbdTlsTests
{
    private const long Size = 16 << 20;

    [Fact]
    public void NbdcopyOverTlsRoundTripsAndPlaintextIsRefused()
    {
        string dir = Directory.CreateTempSubdirectory("pfnblock-nbd-tls-").FullName;
        try
        {
            using X509Certificate2 cert = SelfSigned();
            // libnbd (GnuTLS) trusts the CA certificates in this directory; the server's own self-signed one is its CA.
            File.WriteAllText(Path.Combine(dir, "ca-cert.pem"), cert.ExportCertificatePem());
            using var device = NbdTestServer.Ram(Size);
            var registry = new NbdExportRegistry();
            registry.Add(new NbdExport("disk", device));
            using var server = new NbdServer(registry, new NbdServerOptions { TlsCertificate = cert, TlsRequired = true });
            var ep = (IPEndPoint)server.Start([NbdListenAddress.Parse("tcp:127.0.0.1:0")])[0];
            string tls = $"nbds://127.0.0.1:{ep.Port}/disk?tls-certificates={dir}";

            string src = Tool.RandomFile(dir, Size, seed: 3);
            string back = Path.Combine(dir, "back.img");
            Tool.Run("nbdcopy", src, tls);
            Tool.Run("nbdcopy", tls, back);
            Assert.Equal(Tool.Sha256(src, Size), Tool.Sha256(back, Size));
            Assert.Contains("TLS", Tool.Run("nbdinfo", tls));

            (int code, _, _) = Tool.RunAllowingFailure("nbdinfo", $"nbd://127.0.0.1:{ep.Port}/disk");
            Assert.NotEqual(0, code);
        }
        finally { Directory.Delete(dir, recursive: true); }
    }

    private static X509Certificate2 SelfSigned()
    {
        using RSA key = RSA.Create(2048);
        var request = new CertificateRequest("CN=localhost", key, HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1);
        var san = new SubjectAlternativeNameBuilder();
        san.AddDnsName("localhost");
        san.AddIpAddress(IPAddress.Loopback);
        request.CertificateExtensions.Add(san.Build());
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(
            X509KeyUsageFlags.DigitalSignature | X509KeyUsageFlags.KeyEncipherment | X509KeyUsageFlags.KeyCertSign, false));
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid("1.3.6.1.5.5.7.3.1")], false));
        DateTimeOffset now = DateTimeOffset.UtcNow;
        return request.CreateSelfSigned(now.AddMinutes(-5), now.AddDays(1));
    }
}
