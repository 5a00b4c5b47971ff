# Imported by every scenario's option set. A TCG guest (no KVM here) runs some 50x slower than
# a KVM one, on a host shared with other work: the server's default 200 ms connect, 2 s queue,
# 5 s read and 30 s worker-boot timeouts would turn a slow CPU into 504s, killed workers and
# abandoned rolls. The scenarios test that nothing is dropped or refused, not these limits,
# so they are raised here (through the freeform settings, i.e. the generated config file).
{
  services.rip-server.settings = {
    connect_timeout_ms = 5000;
    queue_timeout_ms = 60000;
    read_timeout_ms = 60000;
    boot_timeout_ms = 180000;
  };
}
