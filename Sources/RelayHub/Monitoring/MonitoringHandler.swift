import Foundation
import NIOCore
import NIOHTTP1
import NIOSSL
import RelayCore

/// What the monitoring listener answers a request with.
struct MonitoringResponse: Sendable, Equatable {
    var status: HTTPResponseStatus
    var contentType: String
    var body: [UInt8]
    /// Headers beyond the content's and the connection's.
    var headers: [String: String] = [:]

    static func json(_ object: JSONObject, status: HTTPResponseStatus = .ok) -> MonitoringResponse {
        var body = JSONWriter.bytes(.object(object))
        body.append(UInt8(ascii: "\n"))
        return MonitoringResponse(status: status, contentType: "application/json", body: body)
    }

    static func text(_ text: String, status: HTTPResponseStatus) -> MonitoringResponse {
        MonitoringResponse(status: status, contentType: "text/plain; charset=utf-8", body: Array((text + "\n").utf8))
    }
}

/// The monitoring endpoints (docs/OPERATIONS.md), given a request's path and query.
struct MonitoringRoutes: Sendable {
    let server: HubServer

    static func path(of uri: String) -> String { URLComponents(string: uri)?.path ?? uri }

    func respond(method: HTTPMethod, uri: String) -> MonitoringResponse {
        guard method == .GET || method == .HEAD else { return .text("only GET and HEAD are served here", status: .methodNotAllowed) }
        let components = URLComponents(string: uri)
        let path = components?.path ?? uri
        var query: [String: String] = [:]
        for item in components?.queryItems ?? [] { query[item.name] = item.value ?? "" }
        let hub = server.hub
        switch path {
        case "/healthz", "/readyz":
            if let reason = server.unhealthyReason {
                return .json(["status": "unavailable", "reason": .string(reason)], status: .serviceUnavailable)
            }
            return .json(["status": "ok"])
        case "/varz": return .json(hub.varz(listeners: server.listenerSummary))
        case "/connz":
            let limit = query["limit"].flatMap(Int.init) ?? 1024
            let offset = query["offset"].flatMap(Int.init) ?? 0
            return .json(hub.connz(limit: limit, offset: offset, sort: query["sort"] ?? "cid"))
        case "/subsz": return .json(hub.subsz())
        case "/queuez": return .json(hub.queuez())
        case "/servicez": return .json(hub.servicez())
        case "/metrics":
            return MonitoringResponse(
                status: .ok, contentType: "text/plain; version=0.0.4; charset=utf-8", body: Array(hub.metrics.scrape(hub).utf8))
        case "/", "/index.html":
            return MonitoringResponse(status: .ok, contentType: "text/html; charset=utf-8", body: Array(StatusPage.html.utf8))
        default:
            return .text("no such endpoint: \(path)", status: .notFound)
        }
    }
}

/// Serves the monitoring endpoints on one HTTP/1.1 connection; keeps it open when the client asks.
final class MonitoringHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let routes: MonitoringRoutes
    private var head: HTTPRequestHead?

    init(routes: MonitoringRoutes) {
        self.routes = routes
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head): self.head = head
        case .body: break
        case .end:
            guard let head = head.take() else { return }
            let hub = routes.server.hub
            let secured = (try? context.pipeline.syncOperations.handler(type: NIOSSLServerHandler.self)) != nil
            let step = hub.monitoringAccess.step(
                path: MonitoringRoutes.path(of: head.uri), authorization: head.headers.first(name: "Authorization"), secured: secured,
                configuration: hub.configuration)
            switch step {
            case .allowed:
                write(routes.respond(method: head.method, uri: head.uri), to: head, context: context)
            case .refused(let response):
                write(response, to: head, context: context)
            case .verify(let authorization):
                // Answered on this loop once checked; the HTTP pipeline holds later requests until then.
                let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
                let (routes, loop, address) = (routes, context.eventLoop, context.channel.remoteAddress?.ipAddress)
                let delay = TimeAmount.nanoseconds(Int64(hub.configuration.limits.authFailureDelaySeconds * 1_000_000_000))
                Task {
                    var refusal: MonitoringResponse?
                    var after = TimeAmount.zero
                    if hub.hasFailedTooOften(address) {
                        refusal = .text("too many failed authentications from this address", status: .tooManyRequests)
                    } else {
                        refusal = await hub.monitoringAccess.verify(authorization, hub: hub, secured: secured)
                    }
                    if refusal?.status == .unauthorized {
                        // As for sessions: counted, and answered late, so guessing is slow.
                        hub.authenticationFailed(from: address)
                        after = delay
                    }
                    let response = refusal
                    loop.scheduleTask(in: after) {
                        let (handler, context) = bound.value
                        handler.write(response ?? routes.respond(method: head.method, uri: head.uri), to: head, context: context)
                    }
                }
            }
        }
    }

    private func write(_ response: MonitoringResponse, to head: HTTPRequestHead, context: ChannelHandlerContext) {
        var headers = HTTPHeaders()
        for (name, value) in response.headers { headers.add(name: name, value: value) }
        headers.add(name: "Content-Type", value: response.contentType)
        headers.add(name: "Content-Length", value: "\(response.body.count)")
        headers.add(name: "Cache-Control", value: "no-store")
        if !head.isKeepAlive { headers.add(name: "Connection", value: "close") }
        context.write(
            wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: response.status, headers: headers))), promise: nil)
        if head.method != .HEAD {
            context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: response.body)))), promise: nil)
        }
        let done = context.writeAndFlush(wrapOutboundOut(.end(nil)))
        if !head.isKeepAlive {
            let channel = context.channel
            done.whenComplete { _ in channel.close(promise: nil) }
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
