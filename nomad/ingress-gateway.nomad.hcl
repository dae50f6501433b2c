# An Envoy ingress gateway and ingress-service-monitor in one task group: the daemon is a
# sidecar of the gateway, started before it and stopped with it.
#
#   nomad job run -var 'prefix=gw-us-east' -var 'image=registry.example/ingress-service-monitor:0.1.0' \
#     nomad/ingress-gateway.nomad.hcl
#
# Then tag a mesh service (its service-defaults must say Protocol = "http"):
#   tags = ["gw-us-east-traefik.http.routers.shop.rule=Host('shop.example.com')"]
# and Traefik routes shop.example.com to this gateway, which routes it to the service.
#
# Why a plain `consul connect envoy` task rather than Nomad's connect { gateway { ingress {} } }:
# Nomad writes the ingress-gateway config entry itself from the job's `ingress` block on
# every submission, and that entry is exactly what the daemon owns. Two writers of one
# entry would undo each other. With the raw command, Nomad only runs processes and the
# daemon is the entry's only writer.
#
# Why network mode "host":
# - Envoy binds the ingress listeners on the port numbers written in the config entry
#   (INGRESSPORT), and the daemon registers that same number as the ingress service's
#   port for Traefik/Fabio; likewise the readiness port is both Envoy's bind port and the
#   port in the check URL. On the host network these numbers are the real sockets, with
#   no mapping to keep in step (in bridge mode the entry's port would be the in-namespace
#   one while Traefik needs the host one, and `-register` would refuse the host address
#   as unbindable without extra -bind-address plumbing).
# - The Consul agent's HTTP (daemon) and gRPC (Envoy's xDS) APIs are reachable on
#   127.0.0.1, so the agent need not listen on the node's LAN address.
# The price: the gateway's ports are static, so one such group per node and port set.

variable "prefix" {
  type        = string
  description = "Tag prefix (TAGINGRESSSERVICE): tags starting with <prefix>- are exposed"
}

variable "gateway_name" {
  type        = string
  default     = "ingress-gateway"
  description = "The gateway's Consul service name, also the ingress-gateway config entry's name"
}

variable "datacenters" {
  type    = list(string)
  default = ["dc1"]
}

variable "image" {
  type        = string
  default     = "localhost/ingress-service-monitor:0.1.0"
  description = "The FROM-scratch image built from Containerfile.scratch or Dockerfile"
}

# With Consul ACLs, both tasks log in to Consul with their workload identity (Nomad 1.7+)
# and get their own token; the README gives the auth method's binding rules and roles.
# Set this to false on a cluster without Consul ACLs, where that login fails the allocation.
variable "consul_workload_identity" {
  type        = bool
  default     = true
  description = "Give both tasks a Consul ACL token derived from their workload identity"
}

# The exec driver runs the gateway from the node's own binaries, by absolute path.
variable "consul_binary" {
  type    = string
  default = "/usr/bin/consul"
}

variable "envoy_binary" {
  type    = string
  default = "/usr/bin/envoy"
}

job "ingress-gateway" {
  datacenters = var.datacenters
  type        = "service"

  group "gateway" {
    count = 1

    network {
      mode = "host"

      # The gateway's HTTP listener (INGRESSPORT): created by Envoy from the config entry
      # and registered as the ingress service's port.
      port "ingress" {
        static = 9997
      }

      # Envoy's /ready (INGRESSHEALTHCHECKPORT), polled by the ingress service's check.
      port "ready" {
        static = 8443
      }

      # The daemon's /health (HEALTHPORT), checked by Nomad's service below.
      port "health" {
        static = 10000
      }

      # Envoy's admin API, bound to loopback only; dynamic so it cannot collide with
      # another Envoy on the node.
      port "envoy_admin" {}
    }

    task "ingress-service-monitor" {
      driver = "docker"

      # Started before the gateway and kept running for the group's whole life (Nomad does
      # not wait for it to be ready: Envoy gets its listeners whenever the entry has them).
      # On stop Nomad stops main tasks before sidecars, so the gateway goes first and the
      # daemon then deregisters the ingress service.
      lifecycle {
        hook    = "prestart"
        sidecar = true
      }

      config {
        image        = var.image
        network_mode = "host"
      }

      # Every name here is one the daemon reads (tests/packaging.rs checks it against
      # ingress_service_monitor::config::VARIABLES). Ports come from the network block
      # above, so they cannot drift from what the gateway binds.
      env {
        TYPEGATEWAY               = "traefik"
        CONSULGATEWAY             = "ingress"
        TAGINGRESSSERVICE         = var.prefix
        SERVICENAMEINGRESSGATEWAY = var.gateway_name
        INGRESSPORT               = "${NOMAD_PORT_ingress}"
        INGRESSHEALTHCHECKPORT    = "${NOMAD_PORT_ready}"
        HEALTHPORT                = "${NOMAD_PORT_health}"
        # The node's address that Nomad chose for the ports: where Traefik/Fabio reach the
        # gateway and where the agent reaches /ready.
        INGRESSADDRESS = "${NOMAD_IP_ingress}"
        CONSULHTTPURL  = "http://127.0.0.1:8500"
        LOGFORMAT      = "json"
      }

      # The daemon's Consul token, from its workload identity: Nomad logs in to Consul with
      # the identity named consul_default and puts the derived token in the task's
      # CONSUL_HTTP_TOKEN and CONSUL_TOKEN (both read by the daemon; the env block above
      # must not set a token variable, which would take precedence) and in
      # secrets/consul_token (root-owned, mode 0640: unreadable to the image's user, so the
      # variables are what the daemon uses). The token is read once at start; Nomad keeps
      # it for the allocation's life.
      consul {}

      dynamic "identity" {
        for_each = var.consul_workload_identity ? ["consul_default"] : []
        content {
          name = identity.value
          # The audience the Consul auth method is bound to (`nomad setup consul`).
          aud = ["consul.io"]
          ttl = "1h"
        }
      }

      service {
        name     = "${var.gateway_name}-monitor"
        port     = "health"
        provider = "consul"
        # /metrics on the same port, advertised the usual way for a Prometheus that
        # discovers targets through Consul (README, "Metrics").
        tags = ["metrics"]

        meta {
          metrics_path = "/metrics"
        }

        check {
          type     = "http"
          path     = "/health"
          interval = "10s"
          timeout  = "2s"
        }
      }

      # The daemon deregisters and exits within 5 s of SIGTERM, even with the agent gone.
      kill_timeout = "10s"

      resources {
        cpu    = 50
        memory = 32
      }
    }

    task "gateway" {
      # consul and envoy come from the node (exec chroots into the node's /usr), in
      # versions that support each other.
      driver = "exec"

      config {
        command = var.consul_binary
        args = [
          "connect", "envoy",
          "-envoy-binary", var.envoy_binary,
          "-gateway=ingress",
          "-register",
          "-service", var.gateway_name,
          # The gateway's registered address. Envoy binds the ingress listeners on its
          # IP; its port only feeds the TCP check Consul adds to the registration, and
          # the readiness listener is the one that exists before any service is exposed.
          "-address", "${NOMAD_IP_ready}:${NOMAD_PORT_ready}",
          "-envoy-ready-bind-address", "${NOMAD_IP_ready}",
          "-envoy-ready-bind-port", "${NOMAD_PORT_ready}",
          "-admin-bind", "127.0.0.1:${NOMAD_PORT_envoy_admin}",
          # -register does not deregister on exit: reap a stopped gateway after a minute
          # rather than Consul's default six hours.
          "-deregister-after-critical", "1m",
        ]
      }

      # The gateway's own token, the same way: `consul connect envoy` reads
      # CONSUL_HTTP_TOKEN, which Nomad 1.8 and later set (earlier 1.7 releases set only
      # CONSUL_TOKEN, which the consul CLI ignores).
      consul {}

      dynamic "identity" {
        for_each = var.consul_workload_identity ? ["consul_default"] : []
        content {
          name = identity.value
          aud  = ["consul.io"]
          ttl  = "1h"
        }
      }

      # Envoy drains its listeners on SIGTERM.
      kill_timeout = "30s"

      resources {
        cpu    = 200
        memory = 128
      }
    }
  }
}
