import NIOCore
import RelayCore
import RelayTransport

/// Reconnection: when the connection is lost, the client waits as its `ReconnectPolicy` says,
/// opens a session on the next server with the same identity and credentials, restores what the
/// application had set up (subscriptions with their queue groups, consumers, served services,
/// standing requests: `ClientCore.restorations`, in their order), then sends what was held
/// meanwhile, in order.
extension LIMEClient {
    func startSupervising(after rotation: ServerRotation<String>) {
        let task = Task { [self] in await supervise(rotation) }
        supervisor.withLock { $0 = task }
    }

    func stopSupervising() async {
        let task = supervisor.withLock { $0.take() }
        task?.cancel()
        await task?.value
    }

    private func supervise(_ rotation: ServerRotation<String>) async {
        var rotation = rotation
        while let reason = await core.waitForLoss() {
            // What is sent from now on is held for the next connection.
            let instance = link.withLock { link in
                link.transport = nil
                return link.session.local.instance
            }
            connectionEvents.post(.disconnected(reason: reason.description))
            var failures = 0
            var restored = false
            while !restored, options.reconnect.allowsAttempt(after: failures), !core.isFinal, !Task.isCancelled {
                try? await Task.sleep(for: options.reconnect.delay(after: failures))
                if core.isFinal || Task.isCancelled { break }
                do {
                    try await reconnect(to: rotation.next(), instance: instance)
                    restored = true
                } catch {
                    failures += 1
                }
            }
            guard restored else {
                // Out of attempts (or finished meanwhile): the client ends with the loss's reason.
                core.ended(core.isFinal ? nil : reason)
                if !core.isFinal { connectionEvents.post(.closed) }
                return
            }
        }
    }

    /// One attempt: a session on `server`, everything restored on it, then what was held.
    private func reconnect(to server: String, instance: String?) async throws {
        let connection = try await Self.openSession(to: server, core: core, options: options, instance: instance, group: group)
        let writer = connection.transport.writer
        do {
            try await restore(on: writer)
        } catch {
            connection.transport.channel.close(promise: nil)
            throw error
        }
        // Cancelled or finished meanwhile: this connection is not to be used.
        guard !core.isFinal, !Task.isCancelled else {
            connection.transport.channel.close(promise: nil)
            throw CancellationError()
        }
        link.withLock { link in
            for bytes in link.held { writer.enqueue(bytes) }
            link.held.removeAll()
            link.heldBytes = 0
            link.transport = connection.transport
            link.session = connection.session
            link.server = server
            link.reconnects += 1
        }
        connectionEvents.post(.reconnected(server: server))
    }

    /// Sends each restoration on the new connection before anything else; a refusal is reported
    /// as `restoreFailed` (the rest is restored still), a lost connection fails the attempt.
    private func restore(on writer: ChannelWriter) async throws {
        let deadline = ContinuousClock.now + options.requestTimeout
        for restoration in core.restorations {
            guard restoration.awaitsResponse else {
                writer.enqueue(LIMECodec.encode(.command(restoration.command)))
                continue
            }
            var command = restoration.command
            command.header.id = nil
            let response = try await request(command, until: deadline) { writer.enqueue($0) }
            if response.status == .failure {
                let reason = response.reason?.description ?? "refused"
                connectionEvents.post(.restoreFailed(what: restoration.key, reason: reason))
            }
        }
    }
}
