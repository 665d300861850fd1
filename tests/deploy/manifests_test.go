// Package deploy checks the Kubernetes manifests in
// tokengrain/deploy/kubernetes against the Kubernetes API types, and
// against what the cluster code and docs/cluster.md expect of them. No
// Kubernetes cluster is needed (none runs here): the objects are decoded
// strictly, unknown fields refused, and their wiring is checked.
package deploy

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/yaml"
)

const dir = "../../tokengrain/deploy/kubernetes"

// Timings the manifests must leave room for.
const (
	// clusterShutdownSeconds is what cluster.Shutdown(true) may take in
	// the pinned protoactor: a 2s wait for grains to move, then a
	// graceful stop of the remote's gRPC server of at most 10s.
	clusterShutdownSeconds = 2 + 10
)

// verbsProtoactorNeeds are the calls protoactor's Kubernetes provider
// (cluster/clusterproviders/k8s) makes on pods of its namespace: Get of
// its own pod, Watch of the cluster's pods, Patch of its own labels.
var verbsProtoactorNeeds = []string{"get", "watch", "patch"}

// certManager is the part of cert-manager's v1 Issuer and Certificate
// that the manifests use, to refuse misspelt fields. It is a subset of
// cert-manager's schema written here, not cert-manager's own types
// (their module would bring a controller runtime into the tests).
type certManager struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Metadata   map[string]string `json:"metadata"`
	Spec       struct {
		SelfSigned *struct{} `json:"selfSigned,omitempty"`
		CA         *struct {
			SecretName string `json:"secretName"`
		} `json:"ca,omitempty"`
		IsCA        bool     `json:"isCA,omitempty"`
		CommonName  string   `json:"commonName,omitempty"`
		SecretName  string   `json:"secretName,omitempty"`
		DNSNames    []string `json:"dnsNames,omitempty"`
		Usages      []string `json:"usages,omitempty"`
		Duration    string   `json:"duration,omitempty"`
		RenewBefore string   `json:"renewBefore,omitempty"`
		PrivateKey  *struct {
			Algorithm      string `json:"algorithm"`
			Size           int    `json:"size"`
			RotationPolicy string `json:"rotationPolicy,omitempty"`
		} `json:"privateKey,omitempty"`
		IssuerRef *struct {
			Name string `json:"name"`
			Kind string `json:"kind"`
		} `json:"issuerRef,omitempty"`
	} `json:"spec"`
}

// kustomization is the part of kustomize's Kustomization the manifests use.
type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Namespace  string   `json:"namespace"`
	Resources  []string `json:"resources"`
}

// objects is every object of the kustomization, decoded strictly.
type objects struct {
	deployments     []*appsv1.Deployment
	services        []*corev1.Service
	serviceAccounts []*corev1.ServiceAccount
	roles           []*rbacv1.Role
	roleBindings    []*rbacv1.RoleBinding
	networkPolicies []*networkingv1.NetworkPolicy
	certs, issuers  []*certManager
}

// strict decodes doc into v, refusing unknown and duplicate fields.
func strict(t *testing.T, where string, doc []byte, v any) {
	t.Helper()
	if err := yaml.UnmarshalStrict(doc, v); err != nil {
		t.Errorf("%s: %v", where, err)
	}
}

func load(t *testing.T) objects {
	t.Helper()
	var k kustomization
	raw, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	strict(t, "kustomization.yaml", raw, &k)
	if k.APIVersion != "kustomize.config.k8s.io/v1beta1" || k.Kind != "Kustomization" || len(k.Resources) == 0 {
		t.Fatalf("kustomization.yaml: %s %s with %d resources", k.APIVersion, k.Kind, len(k.Resources))
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.yaml"))
	for _, f := range files {
		if base := filepath.Base(f); base != "kustomization.yaml" && !slices.Contains(k.Resources, base) {
			t.Errorf("%s is not among the kustomization's resources", base)
		}
	}

	var o objects
	for _, res := range k.Resources {
		raw, err := os.ReadFile(filepath.Join(dir, res))
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(raw), -1) {
			if strings.TrimSpace(stripComments(doc)) == "" {
				continue
			}
			where := fmt.Sprintf("%s, document %d", res, i+1)
			var meta struct {
				APIVersion string `json:"apiVersion"`
				Kind       string `json:"kind"`
			}
			if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
				t.Fatalf("%s: %v", where, err)
			}
			d := []byte(doc)
			switch meta.APIVersion + " " + meta.Kind {
			case "apps/v1 Deployment":
				o.deployments = append(o.deployments, decode[appsv1.Deployment](t, where, d))
			case "v1 Service":
				o.services = append(o.services, decode[corev1.Service](t, where, d))
			case "v1 ServiceAccount":
				o.serviceAccounts = append(o.serviceAccounts, decode[corev1.ServiceAccount](t, where, d))
			case "rbac.authorization.k8s.io/v1 Role":
				o.roles = append(o.roles, decode[rbacv1.Role](t, where, d))
			case "rbac.authorization.k8s.io/v1 RoleBinding":
				o.roleBindings = append(o.roleBindings, decode[rbacv1.RoleBinding](t, where, d))
			case "networking.k8s.io/v1 NetworkPolicy":
				o.networkPolicies = append(o.networkPolicies, decode[networkingv1.NetworkPolicy](t, where, d))
			case "cert-manager.io/v1 Certificate":
				o.certs = append(o.certs, decode[certManager](t, where, d))
			case "cert-manager.io/v1 Issuer":
				o.issuers = append(o.issuers, decode[certManager](t, where, d))
			default:
				t.Errorf("%s: %s %s is not checked here; add its type", where, meta.APIVersion, meta.Kind)
			}
		}
	}
	if len(o.deployments) != 1 {
		t.Fatalf("%d Deployments; want 1", len(o.deployments))
	}
	return o
}

func decode[T any](t *testing.T, where string, doc []byte) *T {
	t.Helper()
	v := new(T)
	strict(t, where, doc, v)
	return v
}

func stripComments(doc string) string {
	var b strings.Builder
	for _, line := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "#") {
			b.WriteString(line + "\n")
		}
	}
	return b.String()
}

// The decoding refuses what the API server would: a misspelt field fails.
func TestStrictDecodingRefusesUnknownFields(t *testing.T) {
	var d appsv1.Deployment
	err := yaml.UnmarshalStrict([]byte("apiVersion: apps/v1\nkind: Deployment\nspec:\n  replicaz: 3\n"), &d)
	if err == nil || !strings.Contains(err.Error(), "replicaz") {
		t.Fatalf("got %v; want an unknown field refused", err)
	}
}

func TestManifests_decodeStrictly(t *testing.T) {
	o := load(t)
	t.Logf("deployments=%d services=%d serviceaccounts=%d roles=%d rolebindings=%d networkpolicies=%d certificates=%d issuers=%d",
		len(o.deployments), len(o.services), len(o.serviceAccounts), len(o.roles), len(o.roleBindings),
		len(o.networkPolicies), len(o.certs), len(o.issuers))
}

// member returns the Deployment's container and its pod spec.
func member(t *testing.T, o objects) (*corev1.PodSpec, *corev1.Container) {
	t.Helper()
	pod := &o.deployments[0].Spec.Template.Spec
	if len(pod.Containers) != 1 {
		t.Fatalf("%d containers; want 1", len(pod.Containers))
	}
	return pod, &pod.Containers[0]
}

func portNamed(c *corev1.Container, name string) *corev1.ContainerPort {
	for i := range c.Ports {
		if c.Ports[i].Name == name {
			return &c.Ports[i]
		}
	}
	return nil
}

func envNamed(c *corev1.Container, name string) *corev1.EnvVar {
	for i := range c.Env {
		if c.Env[i].Name == name {
			return &c.Env[i]
		}
	}
	return nil
}

// clusterDoc is docs/cluster.md, which shows the member's main.
func clusterDoc(t *testing.T) string {
	t.Helper()
	raw, err := os.ReadFile("../../docs/cluster.md")
	if err != nil {
		t.Fatal(err)
	}
	return string(raw)
}

// The readiness probe asks the path docs/cluster.md serves
// tokengrain.NewReadiness on, on a port the container declares.
func TestDeployment_readinessProbe(t *testing.T) {
	_, c := member(t, load(t))
	p := c.ReadinessProbe
	if p == nil || p.HTTPGet == nil {
		t.Fatal("no HTTP readiness probe")
	}
	m := regexp.MustCompile(`http\.Handle\("([^"]+)", ready\)`).FindStringSubmatch(clusterDoc(t))
	if m == nil {
		t.Fatal(`docs/cluster.md shows no http.Handle(path, ready)`)
	}
	if p.HTTPGet.Path != m[1] {
		t.Errorf("readiness probe path %q; docs/cluster.md serves the readiness check on %q", p.HTTPGet.Path, m[1])
	}
	if p.HTTPGet.Port.StrVal == "" || portNamed(c, p.HTTPGet.Port.StrVal) == nil {
		t.Errorf("readiness probe port %v is not a named port of the container", p.HTTPGet.Port.String())
	}
	// The probe waits for a grain's answer (the ask bound, 750ms) at most.
	if p.TimeoutSeconds < 1 {
		t.Errorf("readiness probe timeout %ds; want at least 1s, above the ask bound", p.TimeoutSeconds)
	}
}

// The pod leaves the Service (preStop) and shuts the member down within
// its termination grace.
func TestDeployment_terminationGrace(t *testing.T) {
	pod, c := member(t, load(t))
	if pod.TerminationGracePeriodSeconds == nil {
		t.Fatal("no terminationGracePeriodSeconds (Kubernetes' default is 30s; say it)")
	}
	grace := *pod.TerminationGracePeriodSeconds
	var preStop int64
	if c.Lifecycle != nil && c.Lifecycle.PreStop != nil && c.Lifecycle.PreStop.Sleep != nil {
		preStop = c.Lifecycle.PreStop.Sleep.Seconds
	}
	if need := preStop + clusterShutdownSeconds; grace < need {
		t.Errorf("terminationGracePeriodSeconds %d; want at least the preStop sleep %ds + the cluster's shutdown %ds = %d",
			grace, preStop, clusterShutdownSeconds, need)
	} else {
		t.Logf("termination grace %ds >= preStop %ds + cluster shutdown %ds", grace, preStop, clusterShutdownSeconds)
	}
}

// The member advertises its pod IP, which it gets from the downward API.
func TestDeployment_podIPFromDownwardAPI(t *testing.T) {
	_, c := member(t, load(t))
	e := envNamed(c, "POD_IP")
	if e == nil || e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != "status.podIP" {
		t.Fatalf("POD_IP = %+v; want it from the downward API (fieldRef status.podIP)", e)
	}
	if p := portNamed(c, "cluster"); p == nil || p.ContainerPort != 8090 {
		t.Errorf("cluster port %+v; want 8090 (remote.Configure in docs/cluster.md)", p)
	}
	if !strings.Contains(clusterDoc(t), `remote.WithAdvertisedHost(podIP+":8090")`) {
		t.Error("docs/cluster.md no longer advertises podIP:8090; keep the manifest and the doc in step")
	}
}

// The service account may make the calls of protoactor's Kubernetes
// provider on pods, through a RoleBinding to the Deployment's account.
func TestRBAC_protoactorKubernetesProvider(t *testing.T) {
	o := load(t)
	pod, _ := member(t, o)
	sa := pod.ServiceAccountName
	if sa == "" || !slices.ContainsFunc(o.serviceAccounts, func(a *corev1.ServiceAccount) bool { return a.Name == sa }) {
		t.Fatalf("serviceAccountName %q is not a ServiceAccount of the manifests", sa)
	}
	granted := map[string]bool{}
	for _, b := range o.roleBindings {
		bound := slices.ContainsFunc(b.Subjects, func(s rbacv1.Subject) bool { return s.Kind == "ServiceAccount" && s.Name == sa })
		if !bound || b.RoleRef.Kind != "Role" || b.RoleRef.APIGroup != rbacv1.GroupName {
			continue
		}
		for _, r := range o.roles {
			if r.Name != b.RoleRef.Name {
				continue
			}
			for _, rule := range r.Rules {
				if slices.Contains(rule.APIGroups, "") && slices.Contains(rule.Resources, "pods") {
					for _, v := range rule.Verbs {
						granted[v] = true
					}
				}
			}
		}
	}
	for _, v := range verbsProtoactorNeeds {
		if !granted[v] {
			t.Errorf("the service account may not %s pods; protoactor's Kubernetes provider needs %v", v, verbsProtoactorNeeds)
		}
	}
}

// The members' certificate secret is mounted where TLSFiles reads it,
// and the certificate names the ServerName members verify.
func TestDeployment_mutualTLSSecret(t *testing.T) {
	o := load(t)
	pod, c := member(t, o)
	var secret, mountPath string
	for _, v := range pod.Volumes {
		if v.Secret == nil {
			continue
		}
		for _, m := range c.VolumeMounts {
			if m.Name == v.Name {
				secret, mountPath = v.Secret.SecretName, m.MountPath
				if !m.ReadOnly {
					t.Errorf("the TLS secret is mounted read-write")
				}
			}
		}
	}
	if secret == "" {
		t.Fatal("no secret volume mounted")
	}
	var cert *certManager
	for _, ct := range o.certs {
		if ct.Spec.SecretName == secret {
			cert = ct
		}
	}
	if cert == nil {
		t.Fatalf("no Certificate writes the mounted secret %q", secret)
	}
	// docs/cluster.md's TLSFiles reads tls.crt, tls.key and ca.crt (the
	// keys cert-manager writes) from the mount.
	doc := clusterDoc(t)
	for field, key := range map[string]string{"CertFile": "tls.crt", "KeyFile": "tls.key", "CAFile": "ca.crt"} {
		want := fmt.Sprintf(`%s:   "%s/%s"`, field, mountPath, key)
		if !strings.Contains(strings.Join(strings.Fields(doc), " "), strings.Join(strings.Fields(want), " ")) {
			t.Errorf("docs/cluster.md's TLSFiles does not read %s from the mount: want %s", field, want)
		}
	}
	if e := envNamed(c, "TOKENGRAIN_TLS_DIR"); e == nil || e.Value != mountPath {
		t.Errorf("TOKENGRAIN_TLS_DIR = %+v; want %q", e, mountPath)
	}
	serverName := envNamed(c, "TOKENGRAIN_SERVER_NAME")
	if serverName == nil || !slices.Contains(cert.Spec.DNSNames, serverName.Value) {
		t.Errorf("TOKENGRAIN_SERVER_NAME %+v is not among the certificate's dnsNames %v", serverName, cert.Spec.DNSNames)
	}
	for _, u := range []string{"server auth", "client auth"} {
		if !slices.Contains(cert.Spec.Usages, u) {
			t.Errorf("certificate usages %v lack %q: members are both", cert.Spec.Usages, u)
		}
	}
	if cert.Spec.IssuerRef == nil || !slices.ContainsFunc(o.issuers, func(i *certManager) bool {
		return i.Metadata["name"] == cert.Spec.IssuerRef.Name && i.Spec.CA != nil
	}) {
		t.Errorf("the members' certificate is not issued by a CA Issuer of the manifests")
	}
}

// The Service and the NetworkPolicy select the Deployment's pods; only
// they may reach the cluster port.
func TestServiceAndNetworkPolicy_selectTheMembers(t *testing.T) {
	o := load(t)
	_, c := member(t, o)
	labels := o.deployments[0].Spec.Template.Labels
	matches := func(sel map[string]string) bool {
		for k, v := range sel {
			if labels[k] != v {
				return false
			}
		}
		return len(sel) > 0
	}
	for _, s := range o.services {
		if !matches(s.Spec.Selector) {
			t.Errorf("Service %s selects %v, not the pods %v", s.Name, s.Spec.Selector, labels)
		}
		for _, p := range s.Spec.Ports {
			if p.TargetPort.StrVal != "" && portNamed(c, p.TargetPort.StrVal) == nil {
				t.Errorf("Service %s targets port %q, not a port of the container", s.Name, p.TargetPort.StrVal)
			}
			if p.TargetPort.StrVal == "cluster" || p.TargetPort.IntVal == 8090 {
				t.Errorf("Service %s exposes the cluster port", s.Name)
			}
		}
	}
	if len(o.networkPolicies) == 0 {
		t.Fatal("no NetworkPolicy")
	}
	clusterPortOpen := false
	for _, np := range o.networkPolicies {
		if !matches(np.Spec.PodSelector.MatchLabels) {
			t.Errorf("NetworkPolicy %s selects %v, not the pods", np.Name, np.Spec.PodSelector.MatchLabels)
		}
		for _, rule := range np.Spec.Ingress {
			for _, p := range rule.Ports {
				if p.Port == nil || p.Port.IntVal != 8090 {
					continue
				}
				clusterPortOpen = true
				if len(rule.From) == 0 {
					t.Errorf("NetworkPolicy %s opens the cluster port to everyone", np.Name)
				}
				for _, from := range rule.From {
					if from.PodSelector == nil || !matches(from.PodSelector.MatchLabels) || from.NamespaceSelector != nil || from.IPBlock != nil {
						t.Errorf("NetworkPolicy %s opens the cluster port to %+v, not only the members", np.Name, from)
					}
				}
			}
		}
	}
	if !clusterPortOpen {
		t.Error("no NetworkPolicy rule lets members reach each other's cluster port")
	}
}
