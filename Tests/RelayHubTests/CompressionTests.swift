import Foundation
import NIOCore
import RelayClient
import RelayCore
import RelayHub
import RelayTransport
import Testing

@Suite(.timeLimit(.minutes(1))) struct CompressionTests {
    static let negotiated = WebSocketCompression(
        parameters: PerMessageDeflate(serverNoContextTakeover: true, clientNoContextTakeover: true), isClient: false, threshold: 64)

    @Test func whatTheDeflaterCompressesTheInflaterGivesBack() throws {
        let deflater = WebSocketDeflater(Self.negotiated)
        let inflater = WebSocketInflater(Self.negotiated, maximumMessageBytes: 1 << 20)
        let message = Array(String(repeating: #"{"price":42,"sku":"ABC"}"#, count: 200).utf8)
        for _ in 0..<3 {
            let compressed = try #require(message.withUnsafeBufferPointer { deflater.compress($0) })
            #expect(compressed.count < message.count / 10)
            let inflated = try inflater.inflate(compressed, allocator: ByteBufferAllocator())
            #expect(Array(inflated.readableBytesView) == message)
        }
        let small = Array("short".utf8)
        #expect(small.withUnsafeBufferPointer { deflater.compress($0) } == nil, "under the threshold")
    }

    @Test func aMessageThatInflatesPastTheLimitIsRefused() throws {
        let deflater = WebSocketDeflater(Self.negotiated)
        let bomb = [UInt8](repeating: 0x20, count: 2 << 20)
        let compressed = try #require(bomb.withUnsafeBufferPointer { deflater.compress($0) })
        #expect(compressed.count < 16 << 10, "a small frame for what it inflates to")
        let inflater = WebSocketInflater(Self.negotiated, maximumMessageBytes: 1 << 20)
        #expect(throws: WebSocketInflater.InflateError.tooLarge) { try inflater.inflate(compressed, allocator: ByteBufferAllocator()) }
        #expect(throws: WebSocketInflater.InflateError.corrupt) {
            try inflater.inflate([0xFF, 0xFF, 0xFF], allocator: ByteBufferAllocator())
        }
    }

    @Test func relaysClientAndHubTalkCompressed() async throws {
        try await withHub({ $0.compression = .init(websocket: true, threshold: 128) }) { hub in
            var options = LIMEClient.Options(identity: Identity("zip@relay.local"))
            options.reconnect = .never
            options.compressionThreshold = 128
            let client = try await LIMEClient.connect(to: hub.ws, options: options)
            let subscription = try await client.subscribe("zip.>", echo: true)
            var iterator = subscription.makeAsyncIterator()
            let big = JSONValue.string(String(repeating: "squeeze me ", count: 3000))
            for _ in 0..<3 { try await client.publish("zip.big", big) }
            for _ in 0..<3 { #expect(await iterator.next()?.content == big) }
            try await client.publish("zip.small", "tiny")
            #expect(await iterator.next()?.content == "tiny")
            #expect(client.negotiatedCompression?.serverNoContextTakeover == true)
            try await client.finish()
        }
    }

    @Test func aHubWithoutCompressionDeclinesAndTheClientGoesOnUncompressed() async throws {
        try await withHub { hub in
            var options = LIMEClient.Options(identity: Identity("plain@relay.local"))
            options.reconnect = .never
            options.compressionThreshold = 128
            let client = try await LIMEClient.connect(to: hub.ws, options: options)
            #expect(client.negotiatedCompression == nil)
            _ = try await client.ping()
            try await client.finish()
        }
    }

    @Test func aTCPSessionNegotiatesGzipAndOneThatDoesNotAskStaysPlain() async throws {
        try await withHub({ $0.compression.session = true }) { hub in
            var zipped = LIMEClient.Options(identity: Identity("gz@relay.local"))
            zipped.reconnect = .never
            zipped.sessionCompression = true
            let client = try await LIMEClient.connect(to: hub.tcp, options: zipped)
            let plain = try await hub.connect(.tcp, as: "plain@relay.local")
            let subscription = try await plain.subscribe("gz.>")
            var iterator = subscription.makeAsyncIterator()
            let big = JSONValue.string(String(repeating: "squeeze me ", count: 3000))
            // Many envelopes one after another: each crosses the gzip stream whole.
            for n in 0..<50 { try await client.publish("gz.n", n % 10 == 0 ? big : .string("small \(n)")) }
            for n in 0..<50 { #expect(await iterator.next()?.content == (n % 10 == 0 ? big : .string("small \(n)"))) }
            #expect(try await client.ping().status == .success)
            try await client.finish()
            try await plain.finish()
        }
    }
}
