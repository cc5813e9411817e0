"""TLS pieces of mesh mTLS: SDS references, upstream and downstream TLS contexts, and the
per-endpoint transport socket matches of outbound clusters (Istio's ``tlsMode``).

Certificates never appear in generated config: the workload certificate ("default") and
the trust bundle ("ROOTCA") come from the sidecar's own agent over SDS (``sds-grpc``).
So do the certificate files of TLS origination (DestinationRule ``tls`` SIMPLE / MUTUAL,
:func:`origination_socket`): referenced by ``file-cert:`` / ``file-root:`` names that the
agent resolves on the proxy's host (docs/adr/0013).
"""

from __future__ import annotations

from collections.abc import Sequence

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2, config_source_pb2, grpc_service_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2, tls_pb2
from envoy.type.matcher.v3 import string_pb2
from google.protobuf import struct_pb2, wrappers_pb2

from shoal.api.traffic_policy import ClientTLSSettings, TLSMode
from shoal.netaddr import is_ip
from shoal.xds import secret_names
from shoal.xds.generate.protocol import pack
from shoal.xds.types import SDS_CLUSTER, SECRET_ROOT_CA, SECRET_WORKLOAD_CERT

TLS_SOCKET = "envoy.transport_sockets.tls"
# Endpoint metadata that selects the mTLS transport socket (like Istio's tlsMode=istio).
TLS_MATCH_FILTER = "envoy.transport_socket_match"
TLS_MODE_KEY = "tlsMode"
TLS_MODE_MESH = "istio"
ALPN_H2 = ("h2",)
ALPN_HTTP1 = ("http/1.1",)
ALPN_INBOUND_HTTP = ("h2", "http/1.1")


def sds(name: str) -> secret_pb2.SdsSecretConfig:
    """A secret fetched from the local agent over gRPC on the bootstrap cluster."""
    return secret_pb2.SdsSecretConfig(
        name=name,
        sds_config=config_source_pb2.ConfigSource(
            api_config_source=config_source_pb2.ApiConfigSource(
                api_type=config_source_pb2.ApiConfigSource.GRPC,
                transport_api_version=config_source_pb2.V3,
                grpc_services=[grpc_service_pb2.GrpcService(
                    envoy_grpc=grpc_service_pb2.GrpcService.EnvoyGrpc(cluster_name=SDS_CLUSTER))],
            ),
            resource_api_version=config_source_pb2.V3,
        ),
    )


def _common(alpn: Sequence[str], sans: Sequence[str]) -> tls_pb2.CommonTlsContext:
    validation = common_pb2.CertificateValidationContext(
        match_typed_subject_alt_names=[
            common_pb2.SubjectAltNameMatcher(
                san_type=common_pb2.SubjectAltNameMatcher.URI,
                matcher=string_pb2.StringMatcher(exact=san),
            )
            for san in sans
        ]
    )
    return tls_pb2.CommonTlsContext(
        tls_certificate_sds_secret_configs=[sds(SECRET_WORKLOAD_CERT)],
        combined_validation_context=tls_pb2.CommonTlsContext.CombinedCertificateValidationContext(
            default_validation_context=validation,
            validation_context_sds_secret_config=sds(SECRET_ROOT_CA),
        ),
        alpn_protocols=list(alpn),
    )


def upstream_tls(sni: str, sans: Sequence[str], alpn: Sequence[str]) -> tls_pb2.UpstreamTlsContext:
    """Client side of mesh mTLS: our SVID, the mesh roots, the destination's identities."""
    return tls_pb2.UpstreamTlsContext(common_tls_context=_common(alpn, sans), sni=sni)


def downstream_tls(alpn: Sequence[str]) -> tls_pb2.DownstreamTlsContext:
    """Server side of mesh mTLS: a client certificate from the mesh roots is required
    (any mesh identity; AuthorizationPolicy decides which ones may do what)."""
    return tls_pb2.DownstreamTlsContext(
        common_tls_context=_common(alpn, ()),
        require_client_certificate=wrappers_pb2.BoolValue(value=True),
    )


def control_plane_tls(server_name: str, alpn: Sequence[str] = ()
                      ) -> tls_pb2.UpstreamTlsContext:
    """Client side of mTLS to the control plane, as the bootstrap's ``xds_cluster`` does
    it: our SVID, the mesh roots, and the control plane's certificate name (a DNS SAN,
    also the SNI)."""
    return tls_pb2.UpstreamTlsContext(
        common_tls_context=tls_pb2.CommonTlsContext(
            tls_certificate_sds_secret_configs=[sds(SECRET_WORKLOAD_CERT)],
            combined_validation_context=(
                tls_pb2.CommonTlsContext.CombinedCertificateValidationContext(
                    default_validation_context=common_pb2.CertificateValidationContext(
                        match_typed_subject_alt_names=[san_matcher(server_name)]),
                    validation_context_sds_secret_config=sds(SECRET_ROOT_CA))),
            alpn_protocols=list(alpn)),
        sni=server_name)


def mesh_service_tls(spiffe_id: str, alpn: Sequence[str] = ()) -> tls_pb2.UpstreamTlsContext:
    """Client side of mTLS to a mesh service that is no workload of the registry (e.g. a
    standalone rate-limit service): our SVID, the mesh roots, and the one SPIFFE ID its
    certificate must carry (a URI SAN). No SNI: the server has one certificate."""
    return tls_pb2.UpstreamTlsContext(common_tls_context=_common(alpn, (spiffe_id,)))


def tls_socket(ctx: tls_pb2.UpstreamTlsContext | tls_pb2.DownstreamTlsContext
               ) -> base_pb2.TransportSocket:
    return base_pb2.TransportSocket(name=TLS_SOCKET, typed_config=pack(ctx))


def mesh_endpoint_metadata() -> base_pb2.Metadata:
    """Metadata of an endpoint that speaks mesh mTLS."""
    md = base_pb2.Metadata()
    md.filter_metadata[TLS_MATCH_FILTER].CopyFrom(
        struct_pb2.Struct(fields={TLS_MODE_KEY: struct_pb2.Value(string_value=TLS_MODE_MESH)})
    )
    return md


def transport_socket_matches(
    sni: str, sans: Sequence[str], alpn: Sequence[str]
) -> list[cluster_pb2.Cluster.TransportSocketMatch]:
    """mTLS to endpoints marked ``tlsMode: istio``, plaintext to every other endpoint:
    Envoy's default when no match applies and the cluster names no transport socket (so
    no second, catch-all raw-buffer match as Istio writes it: 140 of a mesh cluster's
    655 bytes, sent to every proxy for every cluster)."""
    match = struct_pb2.Struct(fields={TLS_MODE_KEY: struct_pb2.Value(string_value=TLS_MODE_MESH)})
    return [
        cluster_pb2.Cluster.TransportSocketMatch(
            name="tlsMode-istio", match=match,
            transport_socket=tls_socket(upstream_tls(sni, sans, alpn)),
        ),
    ]


def san_matcher(san: str) -> common_pb2.SubjectAltNameMatcher:
    """An exact SAN matcher of the type ``san`` looks like: URI (``scheme://``), IP
    address, else DNS name."""
    kind = common_pb2.SubjectAltNameMatcher.DNS
    if "://" in san:
        kind = common_pb2.SubjectAltNameMatcher.URI
    elif is_ip(san):
        kind = common_pb2.SubjectAltNameMatcher.IP_ADDRESS
    return common_pb2.SubjectAltNameMatcher(san_type=kind,
                                            matcher=string_pb2.StringMatcher(exact=san))


def origination_tls(settings: ClientTLSSettings, host: str, alpn: Sequence[str]
                    ) -> tls_pb2.UpstreamTlsContext:
    """TLS origination (``mode`` SIMPLE / MUTUAL) to a destination called ``host``.

    The server is verified against ``caCertificates`` (the host's trust store without it)
    unless ``insecureSkipVerify``, and its certificate must name one of
    ``subjectAltNames`` -- by default the SNI, as a browser checks the host name. SNI is
    ``sni`` or else ``host``; MUTUAL presents the client certificate files. Every file is
    an SDS secret served by the proxy's agent: nothing is inlined.
    """
    assert settings.mode in (TLSMode.SIMPLE, TLSMode.MUTUAL)
    sni = settings.sni or host
    common = tls_pb2.CommonTlsContext(alpn_protocols=list(alpn))
    if settings.mode is TLSMode.MUTUAL:
        assert settings.client_certificate and settings.private_key  # validated by the API
        common.tls_certificate_sds_secret_configs.append(sds(secret_names.cert_secret(
            settings.client_certificate, settings.private_key)))
    if not settings.insecure_skip_verify:
        sans = settings.subject_alt_names or [sni]
        common.combined_validation_context.CopyFrom(
            tls_pb2.CommonTlsContext.CombinedCertificateValidationContext(
                default_validation_context=common_pb2.CertificateValidationContext(
                    match_typed_subject_alt_names=[san_matcher(s) for s in sans]),
                validation_context_sds_secret_config=sds(secret_names.root_secret(
                    settings.ca_certificates, settings.ca_crl))))
    return tls_pb2.UpstreamTlsContext(common_tls_context=common, sni=sni)


def origination_socket(settings: ClientTLSSettings, host: str, alpn: Sequence[str]
                       ) -> base_pb2.TransportSocket:
    return tls_socket(origination_tls(settings, host, alpn))
