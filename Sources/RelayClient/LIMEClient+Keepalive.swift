/// Keepalive: a connection can stay open while nothing gets through (a paused network, a frozen
/// hub); TCP may take many minutes to notice. The client pings the hub every `pingInterval` and,
/// after `maximumPingsOutstanding` unanswered in a row, closes the connection, which the
/// reconnection then replaces, as nats.go does with its PINGs.
extension LIMEClient {
    func startKeepalive() {
        guard let interval = options.pingInterval, interval > .zero else { return }
        let limit = max(options.maximumPingsOutstanding, 1)
        let task = Task { [weak self] in
            var unanswered = 0
            while !Task.isCancelled {
                try? await Task.sleep(for: interval)
                guard let self, !Task.isCancelled, !core.hasEnded else { return }
                // Reconnecting: the reconnection has its own deadlines.
                guard let channel = link.withLock({ $0.transport?.channel }) else {
                    unanswered = 0
                    continue
                }
                do {
                    _ = try await ping(timeout: interval)
                    unanswered = 0
                } catch LIMEClientError.timedOut {
                    unanswered += 1
                    if unanswered >= limit {
                        unanswered = 0
                        channel.close(promise: nil)
                    }
                } catch {
                    // Lost meanwhile, or ended: the loss is the reconnection's to handle.
                    unanswered = 0
                }
            }
        }
        keepalive.withLock { $0 = task }
    }

    func stopKeepalive() {
        keepalive.withLock { $0.take() }?.cancel()
    }
}
