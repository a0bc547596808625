// Package cluster runs a local Kubernetes control plane from binaries built out of Go modules
// (test/tools): etcd, kube-apiserver (authorization Node,RBAC), kube-controller-manager,
// kube-scheduler and kwok for fake nodes, and installs brokerport into it with the real
// manifests. The end-to-end suite and `make demo` share it.
package cluster

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// ControlPlane is a real kube-apiserver with etcd, kube-controller-manager, kube-scheduler and
// kwok (fake nodes), each a process of its own with its log in dir.
type ControlPlane struct {
	Dir             string
	Bin             string
	APIServer       string // https://127.0.0.1:<port>
	AdminKubeconfig string // system:masters
	CACert          []byte
	// Detached processes outlive the Go program that started them (`make demo`); otherwise they
	// die with it.
	Detached  bool
	processes []*Process
}

// Process is one running component.
type Process struct {
	Name string
	cmd  *exec.Cmd
	Log  string
}

// Pid is the process's ID.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// StartProcess runs a binary with its output in Dir/<name>.log.
func (cp *ControlPlane) StartProcess(name, binary string, args []string, env ...string) (*Process, error) {
	logPath := filepath.Join(cp.Dir, name+".log")
	// Appended to, so that a restarted process keeps its earlier log.
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(binary, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if !cp.Detached {
		cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &Process{Name: name, cmd: cmd, Log: logPath}
	cp.processes = append(cp.processes, p)
	go func() { _ = cmd.Wait(); logFile.Close() }()
	return p, nil
}

// Stop ends the process.
func (p *Process) Stop() { StopPid(p.cmd.Process.Pid) }

// StopPid ends a process by its PID (and its process group), politely first.
func StopPid(pid int) {
	_ = syscall.Kill(-pid, syscall.SIGTERM)
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if syscall.Kill(pid, 0) != nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	_ = syscall.Kill(-pid, syscall.SIGKILL)
}

// Stop ends every process, the last started first.
func (cp *ControlPlane) Stop() {
	for i := len(cp.processes) - 1; i >= 0; i-- {
		cp.processes[i].Stop()
	}
}

// Pids are the processes' IDs, for a later `make demo-down`.
func (cp *ControlPlane) Pids() []int {
	var pids []int
	for _, p := range cp.processes {
		pids = append(pids, p.Pid())
	}
	return pids
}

// Logs prints the tail of every process's log, for a failed run.
func (cp *ControlPlane) Logs() string {
	var b strings.Builder
	for _, p := range cp.processes {
		data, _ := os.ReadFile(p.Log)
		lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
		if len(lines) > 60 {
			lines = lines[len(lines)-60:]
		}
		fmt.Fprintf(&b, "\n===== %s (%s, last %d lines) =====\n%s\n", p.Name, p.Log, len(lines), strings.Join(lines, "\n"))
	}
	return b.String()
}

func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Start brings up etcd, kube-apiserver (authorization Node,RBAC),
// kube-controller-manager, kube-scheduler and kwok.
func Start(ctx context.Context, bin, dir string, detached bool) (*ControlPlane, error) {
	cp := &ControlPlane{Dir: dir, Bin: bin, Detached: detached}
	ok := false
	defer func() {
		if !ok {
			cp.Stop()
		}
	}()
	pki, err := writePKI(dir)
	if err != nil {
		return nil, fmt.Errorf("writing the PKI: %w", err)
	}
	cp.CACert = pki.caCert

	etcdClient, _ := FreePort()
	etcdPeer, _ := FreePort()
	if _, err := cp.StartProcess("etcd", filepath.Join(bin, "etcd"), []string{
		"--data-dir", filepath.Join(dir, "etcd"),
		"--listen-client-urls", fmt.Sprintf("http://127.0.0.1:%d", etcdClient),
		"--listen-peer-urls", fmt.Sprintf("http://127.0.0.1:%d", etcdPeer),
	}); err != nil {
		return nil, err
	}

	apiPort, _ := FreePort()
	cp.APIServer = fmt.Sprintf("https://127.0.0.1:%d", apiPort)
	if _, err := cp.StartProcess("kube-apiserver", filepath.Join(bin, "kube-apiserver"), []string{
		"--etcd-servers", fmt.Sprintf("http://127.0.0.1:%d", etcdClient),
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", fmt.Sprintf("--secure-port=%d", apiPort),
		"--cert-dir", filepath.Join(dir, "apiserver-certs"),
		"--tls-cert-file", pki.path("apiserver.crt"), "--tls-private-key-file", pki.path("apiserver.key"),
		"--client-ca-file", pki.path("ca.crt"),
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file", pki.path("sa.pub"), "--service-account-signing-key-file", pki.path("sa.key"),
		"--service-cluster-ip-range=10.96.0.0/16",
		"--authorization-mode=Node,RBAC",
		"--allow-privileged=true",
		"--profiling=false",
	}); err != nil {
		return nil, err
	}
	cp.AdminKubeconfig = filepath.Join(dir, "admin.kubeconfig")
	if err := WriteKubeconfig(cp.AdminKubeconfig, cp.APIServer, pki.caCert, "admin", pki.path("admin.crt"), pki.path("admin.key"), ""); err != nil {
		return nil, err
	}
	if err := cp.waitReady(ctx, pki); err != nil {
		return nil, err
	}

	if _, err := cp.StartProcess("kube-controller-manager", filepath.Join(bin, "kube-controller-manager"), []string{
		"--kubeconfig", cp.AdminKubeconfig,
		"--authentication-kubeconfig", cp.AdminKubeconfig, "--authorization-kubeconfig", cp.AdminKubeconfig,
		"--service-account-private-key-file", pki.path("sa.key"), "--root-ca-file", pki.path("ca.crt"),
		"--leader-elect=false", "--secure-port=0",
		"--controllers=*,-nodeipam,-cloud-node-lifecycle,-service-lb-controller,-route",
		// kwok does not heartbeat its nodes here: without a long grace period every node is
		// marked NotReady after a minute, and every pod with it.
		"--node-monitor-grace-period=1h", "--node-startup-grace-period=1h",
	}); err != nil {
		return nil, err
	}
	if _, err := cp.StartProcess("kube-scheduler", filepath.Join(bin, "kube-scheduler"), []string{
		"--kubeconfig", cp.AdminKubeconfig,
		"--authentication-kubeconfig", cp.AdminKubeconfig, "--authorization-kubeconfig", cp.AdminKubeconfig,
		"--leader-elect=false", "--secure-port=0",
	}); err != nil {
		return nil, err
	}
	// No --server-address: kwok's server (exec, logs, metrics) is not needed here, and starting
	// it races kwok's own controller on a package-level map in its CEL library
	// (wzshiming/easycel typeTraitMap): "fatal error: concurrent map writes" in
	// Server.InstallMetrics, seen once in CI.
	if _, err := cp.StartProcess("kwok", filepath.Join(bin, "kwok"), []string{
		"--kubeconfig", cp.AdminKubeconfig,
		"--manage-all-nodes=false",
		"--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
		"--manage-nodes-with-label-selector=",
	}); err != nil {
		return nil, err
	}
	ok = true
	return cp, nil
}

// waitReady polls /readyz with the admin certificate.
func (cp *ControlPlane) waitReady(ctx context.Context, pki *pki) error {
	cert, err := tls.LoadX509KeyPair(pki.path("admin.crt"), pki.path("admin.key"))
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pki.caCert)
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}}}}
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		resp, err := client.Get(cp.APIServer + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("kube-apiserver not ready within 60s")
}

// pki is the control plane's certificates, made with crypto/x509.
type pki struct {
	dir    string
	caCert []byte
}

func (p *pki) path(name string) string { return filepath.Join(p.dir, name) }

func writePKI(dir string) (*pki, error) {
	p := &pki{dir: filepath.Join(dir, "pki")}
	if err := os.MkdirAll(p.dir, 0o700); err != nil {
		return nil, err
	}
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "e2e-ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	ca, _ := x509.ParseCertificate(caDER)
	p.caCert = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	if err := os.WriteFile(p.path("ca.crt"), p.caCert, 0o600); err != nil {
		return nil, err
	}
	issue := func(name string, tmpl *x509.Certificate) error {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl.SerialNumber, _ = rand.Int(rand.Reader, big.NewInt(1<<62))
		tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour)
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			return err
		}
		keyDER, _ := x509.MarshalECPrivateKey(key)
		if err := os.WriteFile(p.path(name+".crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
			return err
		}
		return os.WriteFile(p.path(name+".key"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600)
	}
	if err := issue("apiserver", &x509.Certificate{
		Subject: pkix.Name{CommonName: "kube-apiserver"}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:    []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("10.96.0.1")},
	}); err != nil {
		return nil, err
	}
	if err := issue("admin", &x509.Certificate{
		Subject: pkix.Name{CommonName: "e2e-admin", Organization: []string{"system:masters"}}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}); err != nil {
		return nil, err
	}
	saKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	pub, _ := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	if err := os.WriteFile(p.path("sa.key"), pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(saKey)}), 0o600); err != nil {
		return nil, err
	}
	return p, os.WriteFile(p.path("sa.pub"), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o600)
}

// WriteKubeconfig writes a kubeconfig with a client certificate or a bearer token.
func WriteKubeconfig(path, server string, ca []byte, user, certFile, keyFile, token string) error {
	auth := fmt.Sprintf("    client-certificate: %s\n    client-key: %s\n", certFile, keyFile)
	if token != "" {
		auth = fmt.Sprintf("    token: %s\n", token)
	}
	caFile := path + ".ca.crt"
	if err := os.WriteFile(caFile, ca, 0o600); err != nil {
		return err
	}
	return os.WriteFile(path, []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: e2e
  cluster:
    server: %s
    certificate-authority: %s
users:
- name: %s
  user:
%scontexts:
- name: e2e
  context: {cluster: e2e, user: %s}
current-context: e2e
`, server, caFile, user, auth, user)), 0o600)
}
