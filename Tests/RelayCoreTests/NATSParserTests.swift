import Testing

@testable import RelayCore

@Suite struct NATSParserTests {
    static let clientOperations: [NATSOperation] = [
        .connect(["verbose": false, "pedantic": false, "name": "t", "headers": true, "no_responders": true]),
        .publish(subject: "orders.new", replyTo: nil, headers: nil, payload: Array("hello".utf8)),
        .publish(subject: "orders.new", replyTo: "_INBOX.abc", headers: nil, payload: []),
        .publish(
            subject: "h", replyTo: "r", headers: NATSHeaders(fields: [("A", "1"), ("A", "2"), ("Trace", "x y")]), payload: [0, 13, 10, 255]),
        .subscribe(subject: "orders.*", queue: nil, sid: "1"),
        .subscribe(subject: "orders.>", queue: "workers", sid: "22"),
        .unsubscribe(sid: "1", max: nil),
        .unsubscribe(sid: "22", max: 5),
        .ping, .pong,
    ]

    static let serverOperations: [NATSOperation] = [
        .info(["server_id": "x", "max_payload": 1_048_576, "headers": true]),
        .message(subject: "orders.new", sid: "1", replyTo: nil, headers: nil, payload: Array("hi\r\nthere".utf8)),
        .message(subject: "orders.new", sid: "1", replyTo: "_INBOX.1", headers: nil, payload: []),
        .message(subject: "_INBOX.1", sid: "9", replyTo: nil, headers: NATSHeaders(status: 503), payload: []),
        .message(
            subject: "s", sid: "2", replyTo: nil,
            headers: NATSHeaders(status: 408, statusDescription: "Request Timeout", fields: [("K", "v")]), payload: [1]),
        .ok, .error("Unknown Protocol Operation"), .ping, .pong,
    ]

    @Test func everyOperationRoundTripsSplitAtEveryByte() throws {
        for (role, operations) in [(NATSParser.Role.server, Self.clientOperations), (.client, Self.serverOperations)] {
            let stream = operations.flatMap(NATSEncoder.encode)
            for split in 0...stream.count {
                var parser = NATSParser(role: role)
                var parsed = try parser.bytesReceived(stream[..<split])
                parsed += try parser.bytesReceived(stream[split...])
                #expect(parsed == operations, "split at \(split)")
                #expect(parser.bufferedByteCount == 0)
            }
        }
    }

    /// Parses `chunks` one read at a time, taking every PUB without headers in place; returns
    /// what came, a PUB in place as an operation with its payload read from where it was left.
    private static func parseInPlace(_ chunks: [[UInt8]], accept: Bool = true) throws -> (operations: [NATSOperation], inPlace: Int) {
        var parser = NATSParser(role: .server)
        var operations: [NATSOperation] = []
        var inPlace = 0
        for chunk in chunks {
            try parser.bytesReceived(chunk, { operations.append($0) }) { publication in
                guard accept else { return false }
                inPlace += 1
                operations.append(
                    .publish(
                        subject: publication.subject, replyTo: publication.replyTo, headers: nil, payload: Array(chunk[publication.payload])
                    ))
                return true
            }
        }
        #expect(parser.bufferedByteCount == 0)
        return (operations, inPlace)
    }

    /// Found by fuzzing (nats-server): a control line of exactly the maximum, cut between its CR
    /// and its LF, was refused, though accepted whole. One byte more is refused either way.
    @Test func aControlLineOfTheMaximumIsAcceptedWhereverItIsCut() throws {
        let line = "SUB " + String(repeating: "a", count: 64 - 6) + " 1"
        #expect(line.utf8.count == 64)
        for cut in 0...(line.utf8.count + 2) {
            var parser = NATSParser(role: .server, maximumControlLine: 64)
            let bytes = Array((line + "\r\n").utf8)
            var operations = try parser.bytesReceived(bytes[..<cut])
            operations += try parser.bytesReceived(bytes[cut...])
            #expect(operations.count == 1, "cut at \(cut)")
        }
        var parser = NATSParser(role: .server, maximumControlLine: 63)
        #expect(throws: NATSProtocolError.self) { _ = try parser.bytesReceived(Array((line + "\r").utf8)) }
    }

    @Test func aPublishWholeInOneReadIsHandedOverInPlace() throws {
        let stream = Self.clientOperations.flatMap(NATSEncoder.encode)
        let (operations, inPlace) = try Self.parseInPlace([stream])
        #expect(operations == Self.clientOperations)
        #expect(inPlace == 2, "the two PUBs; the HPUB comes as an operation")
        // Refused, it comes as an operation all the same.
        let refused = try Self.parseInPlace([stream], accept: false)
        #expect(refused.operations == Self.clientOperations && refused.inPlace == 0)
    }

    @Test func aReadAfterAnIncompleteOneIsParsedInPlaceOnceThatOperationIsComplete() throws {
        let stream = Self.clientOperations.flatMap(NATSEncoder.encode)
        for split in 1..<stream.count {
            let (operations, inPlace) = try Self.parseInPlace([Array(stream[..<split]), Array(stream[split...])])
            #expect(operations == Self.clientOperations, "split at \(split)")
            // A PUB cut by the split is completed in the parser's buffer; any other is in place.
            #expect(inPlace >= 1, "split at \(split)")
        }
        // Three PUBs after one cut in its payload: the cut one from the buffer, the rest in place.
        let pub = NATSEncoder.encode(.publish(subject: "s", replyTo: nil, headers: nil, payload: Array("abcdef".utf8)))
        let (operations, inPlace) = try Self.parseInPlace([Array(pub[..<10]), Array(pub[10...] + pub + pub)])
        #expect(operations.count == 3 && inPlace == 2)
    }

    @Test func readsByteByByte() throws {
        let stream = Self.clientOperations.flatMap(NATSEncoder.encode)
        var parser = NATSParser(role: .server)
        var parsed: [NATSOperation] = []
        for byte in stream { parsed += try parser.bytesReceived([byte]) }
        #expect(parsed == Self.clientOperations)
    }

    @Test func acceptsLowercaseTabsAndBareNewlines() throws {
        var parser = NATSParser(role: .server)
        let parsed = try parser.bytesReceived(Array("ping\npub\tfoo \t 3\r\nabc\r\nsub foo  q 1\r\n".utf8))
        #expect(
            parsed == [
                .ping, .publish(subject: "foo", replyTo: nil, headers: nil, payload: Array("abc".utf8)),
                .subscribe(subject: "foo", queue: "q", sid: "1"),
            ])
    }

    @Test func aMessageWrittenFromAPublicationIsTheOperationItStandsFor() {
        // The direct path (bytes without headers) and the general one, appended after earlier bytes;
        // payload sizes around the decimal digits' boundaries.
        for size in [0, 9, 10, 99, 100, 128, 1000, 65_536] {
            for (metadata, status) in [([:], nil), (["Trace": "x"], nil), ([:], 503)] as [([String: String], Int?)] {
                for replyTo in [nil, "_INBOX.a"] {
                    let message = PublishedMessage(
                        subject: "orders.new", replyTo: replyTo, body: .bytes(Array(repeating: 7, count: size)), metadata: metadata,
                        status: status)
                    for headers in [false, true] {
                        var batch = Array("earlier".utf8)
                        NATSEncoder.encodeMessage(message, sid: "12", headersEnabled: headers, into: &batch)
                        let expected = NATSEncoder.encode(message.natsOperation(sid: "12", headersEnabled: headers))
                        #expect(batch == Array("earlier".utf8) + expected, "size \(size), headers \(headers)")
                        // And a client reads it back whole (the sizes are written right).
                        var parser = NATSParser(role: .client)
                        guard case .message(_, "12", replyTo, _, let payload)? = try? parser.bytesReceived(expected).first else {
                            Issue.record("not read back: size \(size), headers \(headers)")
                            continue
                        }
                        #expect(payload.count == size)
                    }
                }
            }
        }
        #expect(
            String(
                decoding: NATSEncoder.encodeMessage(
                    PublishedMessage(subject: "a", body: .bytes(Array("xy".utf8))), sid: "1", headersEnabled: false), as: UTF8.self)
                == "MSG a 1 2\r\nxy\r\n")
    }

    @Test func encodesAsTheProtocolSays() {
        #expect(
            String(
                decoding: NATSEncoder.encode(.publish(subject: "a", replyTo: "r", headers: nil, payload: Array("xy".utf8))), as: UTF8.self)
                == "PUB a r 2\r\nxy\r\n")
        let hmsg = NATSEncoder.encode(.message(subject: "a", sid: "1", replyTo: nil, headers: NATSHeaders(status: 503), payload: []))
        #expect(String(decoding: hmsg, as: UTF8.self) == "HMSG a 1 16 16\r\nNATS/1.0 503\r\n\r\n\r\n")
        #expect(String(decoding: NATSEncoder.encode(.error("Invalid Subject")), as: UTF8.self) == "-ERR 'Invalid Subject'\r\n")
    }

    @Test(arguments: [
        ("FOO bar\r\n", NATSProtocolError.Kind.unknownOperation),
        ("INFO {}\r\n", .unknownOperation),  // a client may not send INFO
        ("PUB a\r\n", .parser),
        ("PUB a b c d\r\n", .parser),
        ("PUB a x\r\n", .parser),
        ("PUB a 3\r\nabcdef\r\n", .parser),
        ("HPUB a 10 5\r\n", .parser),
        ("HPUB a 5 5\r\nXXXX\r\r\n", .parser),
        ("SUB\r\n", .parser),
        ("UNSUB 1 x\r\n", .parser),
        ("CONNECT {bad json}\r\n", .parser),
        ("CONNECT [1]\r\n", .parser),
        ("PUB a 2000000\r\n", .maximumPayload),
    ])
    func refusesMalformedInput(_ text: String, _ kind: NATSProtocolError.Kind) {
        var parser = NATSParser(role: .server)
        #expect(throws: NATSProtocolError.self) { try parser.bytesReceived(Array(text.utf8)) }
        var again = NATSParser(role: .server)
        do {
            _ = try again.bytesReceived(Array(text.utf8))
        } catch {
            #expect(error.kind == kind, "\(text)")
        }
    }

    @Test func boundsTheControlLineBeforeBuffering() {
        var parser = NATSParser(role: .server, maximumControlLine: 64)
        var failedAt: Int?
        for (offset, byte) in Array(("SUB " + String(repeating: "x", count: 200)).utf8).enumerated() {
            do { _ = try parser.bytesReceived([byte]) } catch {
                #expect(error.kind == .maximumControlLine)
                failedAt = offset
                break
            }
        }
        #expect(failedAt == 64)
    }

    @Test func parsesErrTextWithoutQuotes() throws {
        var parser = NATSParser(role: .client)
        #expect(
            try parser.bytesReceived(Array("-ERR 'Authorization Violation'\r\n+OK\r\n".utf8)) == [.error("Authorization Violation"), .ok])
    }

    @Test func readsHeaderBlocks() throws {
        let headers = try NATSHeaders(parsing: Array("NATS/1.0 503 No Responders\r\nA: 1\r\na: 2\r\nB:  spaced  \r\n\r\n".utf8))
        #expect(headers.status == 503 && headers.statusDescription == "No Responders")
        #expect(headers.values("A") == ["1", "2"])
        #expect(headers["b"] == "spaced")
        #expect(throws: NATSProtocolError.self) { try NATSHeaders(parsing: Array("HTTP/1.1\r\n\r\n".utf8)) }
    }
}
