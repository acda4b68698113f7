import Logging
import OTel
import RelayHub
import ServiceLifecycle

// `relay-otel [CONFIG.json]`: a Relay hub whose spans (publish, route, deliver, request, queue
// store; docs/OPERATIONS.md) go to an OpenTelemetry collector over OTLP/HTTP. The exporter is
// configured as every OpenTelemetry SDK is, by environment: OTEL_EXPORTER_OTLP_ENDPOINT
// (default http://localhost:4318), OTEL_SERVICE_NAME, OTEL_TRACES_SAMPLER, …

var otel = OTel.Configuration.default
otel.serviceName = "relay"
// Only traces: the hub's logs go to standard error and its metrics to /metrics already.
otel.logs.enabled = false
otel.metrics.enabled = false
// Bootstrapped before the hub is made: the hub takes InstrumentationSystem's tracer.
let observability = try OTel.bootstrap(configuration: otel)

let arguments = CommandLine.arguments.dropFirst()
let configuration = try arguments.first.map { try HubConfiguration.load(path: $0) } ?? HubConfiguration()
let logger = Logger(label: "relay")
let server = try HubServer(configuration: configuration, logger: logger)
var source: (@Sendable () throws -> HubConfiguration)?
if let path = arguments.first {
    source = { @Sendable () throws -> HubConfiguration in try HubConfiguration.load(path: path) }
}
// Services stop in reverse order: the hub drains first, then the exporter flushes what it made.
let group = ServiceGroup(
    configuration: .init(
        services: [.init(service: observability), .init(service: HubService(server: server, configurationSource: source))],
        gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
try await group.run()
