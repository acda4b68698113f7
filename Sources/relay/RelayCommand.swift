import ArgumentParser

@main
struct RelayCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "relay",
        abstract: "Relay: a message hub speaking LIME and NATS, and the tools to use it.",
        subcommands: [
            Serve.self, Pub.self, Sub.self, Request.self, Reply.self, Services.self, Queue.self, Consume.self, Bench.self, Send.self,
            Listen.self,
            Passwd.self, Forwarder.self,
        ])
}
