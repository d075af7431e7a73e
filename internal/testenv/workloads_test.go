package testenv

import (
	"fmt"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Deployments roll out on the simulated node: their pods become Ready at once, after the
// delay ReadyAfterAnnotation says, or, of NeverReadyImage, run and stay unready.
func TestWorkloads(t *testing.T) {
	real(t)
	k := NewKube(t, KubeOptions{})
	NewWorkloads(t, k)
	ctx := t.Context()
	replicas := int32(2)
	deployment := func(name, image, readyAfter string) *appsv1.Deployment {
		labels := map[string]string{"app": name}
		d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name}, Spec: appsv1.DeploymentSpec{
			Replicas: &replicas, Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: image}}}}}}
		if readyAfter != "" {
			d.Spec.Template.Annotations = map[string]string{ReadyAfterAnnotation: readyAfter}
		}
		if err := k.Client.Create(ctx, d); err != nil {
			t.Fatal(err)
		}
		return d
	}
	available := func(d *appsv1.Deployment) func() error {
		return func() error {
			got := &appsv1.Deployment{}
			if err := k.Client.Get(ctx, client.ObjectKeyFromObject(d), got); err != nil {
				return err
			}
			if s := got.Status; s.ObservedGeneration != got.Generation || s.AvailableReplicas != 2 || s.UpdatedReplicas != 2 {
				return fmt.Errorf("%s: %+v", d.Name, s)
			}
			return nil
		}
	}
	start := time.Now()
	fast := deployment("fast", "example.org/app:1", "")
	slow := deployment("slow", "example.org/app:1", "3s")
	never := deployment("never", NeverReadyImage, "")
	eventually(t, time.Minute, available(fast))
	eventually(t, time.Minute, available(slow))
	if took := time.Since(start); took < 3*time.Second {
		t.Fatalf("pods with %s=3s were ready after %s", ReadyAfterAnnotation, took)
	}
	// The never-ready Deployment's pods run, scheduled on the node, and stay unready.
	eventually(t, time.Minute, func() error {
		var pods corev1.PodList
		if err := k.Client.List(ctx, &pods, client.InNamespace("default"), client.MatchingLabels{"app": "never"}); err != nil {
			return err
		}
		running := 0
		for _, p := range pods.Items {
			if p.Spec.NodeName == KwokNode && p.Status.Phase == corev1.PodRunning {
				running++
			}
		}
		if running != 2 {
			return fmt.Errorf("%d of %d pods running", running, len(pods.Items))
		}
		return nil
	})
	time.Sleep(2 * time.Second)
	if err := available(never)(); err == nil {
		t.Fatal("the never-ready Deployment became available")
	}
}
